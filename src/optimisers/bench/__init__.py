"""``optimisers-bench``: how fast ``update_`` runs, and what the rules achieve.

Speed mode (the default) times ``optimisers.update_`` for chosen rules, sizes, dtypes,
numbers of arrays and thread counts, and reports ms per step, the effective GB/s of the
rule's minimal byte count (:mod:`.rules`), and the fraction of the machine's bandwidth for
the same access pattern, measured in the same run by a plain fused OpenMP pass (the probe,
:mod:`.yardsticks`).  ``--compare`` runs the same cases through torch.optim (loop,
foreach, fused) and plain numpy (:mod:`.compare`).  The quality mode trains the built-in
problems (:mod:`.problems`) with every rule.  See ``bench/README.md`` in the repository.

Modules: :mod:`._cli` (the command), :mod:`.rules` (the rules, read from the library's
registry, and their byte counts), :mod:`.cases` (a case and its arrays, shared by every
implementation), :mod:`.speed` (our step, running the cases), :mod:`.yardsticks` (the
probe and the plain pass), :mod:`.compare` (torch and numpy), :mod:`.timing` (medians,
round-robin, progress bar), :mod:`.problems` and :mod:`.quality` (training, learning
rates), :mod:`.report` (text, JSON, CSV), :mod:`.plot` (matplotlib, optional).

>>> from optimisers.bench import main, rules
>>> rules.bytes_per_step(rules.get("adam").passes, size=1, itemsize=4)   # Adam, float32
28
>>> main(["--tiny", "--json"])          # doctest: +SKIP
0
"""

from ._cli import main, parse, run

__all__ = ["main", "parse", "run"]
