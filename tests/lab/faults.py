"""Faults injected by real means: nftables tables that live only for one scenario.

Why a dedicated table per fault: deleting the table removes every rule we added and
nothing else, even when the scenario failed half way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tests.lab.netns import ns_run

TABLE = "psl_fault"


def delete_table(ns: str) -> None:
    """Remove the lab's nft table from ns if it exists (idempotent)."""
    ns_run(ns, ["nft", "delete", "table", "inet", TABLE], check=False)


@contextmanager
def nft_rules(ns: str, hook: str, rules: list[str], kind: str = "filter",
              priority: int = -10) -> Iterator[None]:
    """Install rules in a base chain on hook (input/forward/output) of ns, always removed."""
    delete_table(ns)
    ruleset = (
        f"table inet {TABLE} {{\n  chain c {{\n"
        f"    type {kind} hook {hook} priority {priority}; policy accept;\n"
        + "".join(f"    {rule}\n" for rule in rules)
        + "  }\n}\n"
    )
    try:
        ns_run(ns, ["nft", "-f", "-"], input_=ruleset)
        yield
    finally:
        delete_table(ns)
