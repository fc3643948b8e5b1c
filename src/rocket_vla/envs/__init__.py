"""LIBERO on a CPU: environments, the paper's evaluation protocol, scripted experts, collection.

Importing this package is cheap: the simulator (robosuite, MuJoCo, LIBERO) is imported only
when an environment is built, so ``rocket_vla.envs.policy`` can be used by code that never
runs a simulator (a model implementing the :class:`~rocket_vla.envs.policy.Policy` protocol).
"""

from rocket_vla.envs.policy import Policy, TaskInfo, get_policy_factory, register_policy

__all__ = ["Policy", "TaskInfo", "get_policy_factory", "register_policy"]
