"""`python main.py serve --workers N`: N server processes behind nginx on one address (supervisor.py)."""
from workers.supervisor import run_workers, worker_count

__all__ = ["run_workers", "worker_count"]
