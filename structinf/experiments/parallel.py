"""The study's independent units side by side, one process per rank (``torchrun``).

``structinf reproduce`` under ``torchrun --nproc-per-node N`` first deals the
units that depend on nothing but the energies out among the N processes, in
rounds with a barrier after each:

1. the two energies (BLSTM-CRF, BLSTM-CRF+);
2. the local baselines and the inference networks of the lambda grid (Tables
   1, 2, 4 and 5) and of the hidden-size sweep (Figure 1);
3. the gradient-descent grids (dev and test, both energies), one learning rate
   per job, then each grid merged from its learning rates (each learning rate's
   runs draw their own seeded initialisations, so the merged grid is the
   serial one).

Each process trains its units alone (no DDP: a unit is one ordinary training,
with the seed it has in a serial run) and writes them where the serial study
looks for them. Rank 0 then runs the study as one process would, which finds
those units done and reuses them; what depends on the dev-tuned lambda
(instance tailoring, warm starts, Figure 2's timings, the language models) runs
there. The results are those of a serial run: every unit is computed by the
same code from the same seed, only in another process.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Tuple

from .. import distributed
from .progress import stage_cost

logger = logging.getLogger(__name__)

__all__ = ["rounds", "share"]

Job = Tuple[str, float, Callable[[], object]]


def rounds(study) -> List[List[Job]]:
    """The independent units of ``study``'s plan, round by round: (name, cost, run)."""
    plan = study.plan
    single = plan.single_lambda("cnn", False)  # every network on the BLSTM-CRF energy
    single_blstm_plus = plan.single_lambda("blstm", True)

    def net(arch: str, plus: bool, local: bool, lam: float = 1.0, **kw) -> Job:
        name = study.net_name(arch, plus=plus, local=local, default_hidden=plan.hidden,
                              hidden=kw.get("hidden", plan.hidden), lam=lam,
                              **{k: v for k, v in kw.items() if k != "hidden"})
        return (name, stage_cost("network", arch, plus),
                lambda: study.network(arch, plus=plus, local=local, lam=lam, **kw))

    energies = [(study.energy_name(plus), stage_cost("energy", plus=plus),
                 (lambda plus=plus: study.energy(plus))) for plus in (False, True)]
    nets: List[Job] = []

    def grid(arch: str, plus: bool, **kw) -> None:
        nets.append(net(arch, plus, True, **kw))
        nets.extend(net(arch, plus, False, lam, **kw) for lam in plan.lambdas_for(arch, plus))

    grid(plan.plus_arch, True)
    # Table 4's further hidden sizes: the local baselines here; the infnets, at
    # the lambda the grid picks, when rank 0 runs the study.
    nets.extend(net(plan.plus_arch, True, True, hidden=h) for h in plan.table4_hidden)
    for arch in plan.archs:
        grid(arch, False)
    if plan.table5:
        grid("blstm", True)
        if single_blstm_plus is not None:
            nets.append(net("blstm", True, False, single_blstm_plus, layers=2, anneal=True))
    nets.append(net("cnn", False, True, windows=(1, 5)))
    if single is not None:
        nets.append(net("cnn", False, False, single, windows=(1, 5)))
    for arch in plan.figure1_archs:
        for h in plan.hidden_sweep:
            nets.append(net(arch, False, True, hidden=h))
            if single is not None:
                nets.append(net(arch, False, False, single, hidden=h))
    grids = [(plus, split) for plus in (True, False) for split in ("dev", "test")]
    n_lrs = len(plan.gd_lrs)
    gd = [(f"gd-{'crf+' if plus else 'crf'}-{split}-lr{i}", stage_cost("gd") / (2 * n_lrs),
           (lambda plus=plus, split=split, i=i: study.gd_part(plus, split, i)))
          for plus, split in grids for i in range(n_lrs)]
    merge = [(f"gd-{'crf+' if plus else 'crf'}-{split}", 0.0,
              (lambda plus=plus, split=split: study.gd_merge(plus, split)))
             for plus, split in grids]
    seen: set = set()
    out = []
    for jobs in (energies, nets, gd, merge):
        kept = [j for j in jobs if not (j[0] in seen or seen.add(j[0]))]
        out.append(kept)
    return out


def share(study) -> None:
    """Runs this rank's share of every round, waiting for all ranks after each.
    Every rank of the process group must call it, with the same plan."""
    ctx = distributed.context()
    for number, jobs in enumerate(rounds(study), start=1):
        owners = distributed.deal([cost for _, cost, _ in jobs], ctx.world_size)
        mine = [job for job, rank in zip(jobs, owners) if rank == ctx.rank]
        logger.info("rank %d, round %d: %s", ctx.rank, number,
                    ", ".join(name for name, _, _ in mine) or "nothing")
        with distributed.alone():
            for name, _, run in mine:
                run()
        distributed.barrier()
