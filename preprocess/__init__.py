"""Data preparation: loaders and the built-in demo data set."""
