"""Recipes: every recipe key described once as data (keys), and loading, validating and normalising a recipe (parse)."""
