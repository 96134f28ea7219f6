"""Tests of the recommendation core."""
