"""dj_runner: a partitioned, checkpointed, event-logged executor for Data-Juicer recipes."""

__version__ = "0.1.0"
