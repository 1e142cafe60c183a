"""A/B experiments and bandits over the recommenders: plain records, the split of users, and the
statistics of a result. Nothing here touches the database or HTTP, so a simulation can use it in-process."""
