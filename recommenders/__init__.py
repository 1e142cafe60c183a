"""The recommendation engine: model state (interaction_data), one recommender per file, and Engine."""
