"""Built-in ops. Each module holds one op and registers it by name; see ``registry``."""

from dj_runner.ops.registry import all_ops, get_op, register

__all__ = ["all_ops", "get_op", "register"]
