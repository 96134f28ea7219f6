"""fedrec participant SDK: talk to a fedrec coordinator and train a recommender locally."""
