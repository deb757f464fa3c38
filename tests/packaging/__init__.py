"""The package installed as a user installs it: each extra alone, in a fresh environment."""
