"""Does an episode start the way its task says? The BDDL ``:init`` predicates after the wait.

A LIBERO task's BDDL file states the scene it starts from (``(On bowl ramekin)``,
``(In bowl cabinet_top_region)``, ``(Open cabinet_top_region)``, ...), and its stored init
states were recorded to satisfy it. A simulator that differs from the one the states were
made with can break that premise during the 10 no-op wait steps: under MuJoCo >= 3.4 the
bowl of libero_spatial task 5 slides off its ramekin, so the task no longer is the task.
:class:`Premise` evaluates the predicates with LIBERO's own predicate functions (the ones
its success check uses) and returns those that fail; the runner records them per episode
and ``rocket check-env --premises`` tabulates them over every init state.

Two kinds of ``:init`` predicates exist, and only one is a premise:

* **relations** between things of the scene -- a predicate on an object or fixture, or
  relating an object to another object or to a region *of* an object or fixture (a drawer's
  inside, a cabinet's top): these are facts a policy relies on;
* **table placements** -- ``(On plate_1 main_table_plate_region)``: the rectangle of the
  table LIBERO's placement sampler draws the object in when it generates new scenes. The
  stored states were sampled there but objects are free to settle a little outside the
  region's site, so these are reported separately and never count as a broken premise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rocket_vla.errors import RocketError


@dataclass(frozen=True)
class Predicate:
    """One ``:init`` predicate, e.g. ``("on", "akita_black_bowl_1", "plate_1")``."""

    terms: tuple[str, ...]
    relation: bool  # False: a placement in a region of the table (not a premise)

    def __str__(self) -> str:
        return " ".join(self.terms)


def init_predicates(robo_env: Any) -> list[Predicate]:
    """The task's ``:init`` predicates, each classified as a relation or a table placement."""
    problem = robo_env.parsed_problem
    regions = problem.get("regions", {})
    things = set(getattr(robo_env, "objects_dict", {})) | set(getattr(robo_env, "fixtures_dict", {}))
    out = []
    for state in problem["initial_state"]:
        terms = tuple(str(t) for t in state)
        placement = (len(terms) == 3 and terms[2] in regions
                     and regions[terms[2]].get("target") not in things)
        out.append(Predicate(terms, relation=not placement))
    return out


class Premise:
    """The ``:init`` predicates of one LIBERO env, evaluated on its current state."""

    def __init__(self, env: Any) -> None:
        self._env = env
        self._predicates: list[Predicate] | None = None

    @property
    def predicates(self) -> list[Predicate]:
        # Read lazily: a hard reset rebuilds the robosuite env, the parsed problem stays.
        if self._predicates is None:
            self._predicates = init_predicates(self._env.robosuite_env)
        return self._predicates

    def evaluate(self) -> list[tuple[Predicate, bool]]:
        """Every predicate with its truth value in the current state (LIBERO's functions)."""
        robo = self._env.robosuite_env
        out = []
        for pred in self.predicates:
            try:
                value = bool(robo._eval_predicate(list(pred.terms)))
            except (KeyError, AssertionError) as err:
                raise RocketError(
                    f"LIBERO cannot evaluate the init predicate ({pred}) of {self._env.task.suite} task "
                    f"{self._env.task.task_id} ({err!r}); check that the task's BDDL file and the "
                    "installed LIBERO package belong together."
                ) from err
            out.append((pred, value))
        return out

    def check(self) -> list[str]:
        """The relations that do not hold (empty: the episode starts as the task says)."""
        return [str(p) for p, ok in self.evaluate() if p.relation and not ok]
