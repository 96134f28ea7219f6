"""Tests of the participant SDK."""
