"""``python -m fedrec.recipes``: rewrite the shipped recipe files from the defaults."""

import sys

from fedrec.recipes import write_recipes

for path in write_recipes():
    sys.stdout.write(f"wrote {path}\n")
