"""Trainers beyond the in-process one: the Spark trainer (spark_trainer, spark_jobs)."""
