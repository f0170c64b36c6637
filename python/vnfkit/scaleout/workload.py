"""The study's scale-out workload, as flows with start times, lifetimes, packet rates and keys.

Defaults (the study gives rates, not a trace):

* **2 000 new flows/s**, Poisson arrivals.
* **Lifetimes**: a mixture -- 99.9 % lognormal (median 3.85 s, sigma 0.7) and 0.1 % Pareto
  (alpha 1.5, from 30 s up; infinite variance, so some flows outlive any experiment). Why: one-way
  flow lifetimes measured by Lee and Brownlee (CCR 2007) have a lognormal-like body of flows lasting
  seconds and a power-law tail of "tortoises" lasting minutes to hours; the parameters are set so
  that the mean is 5.0 s, which with 2 000 flows/s gives the study's ~10 000 concurrent flows by
  Little's law. The tail is kept to 0.1 % of flows (~2 % of the concurrent population): a heavier
  tail keeps more old flows alive after a split, which slows convergence and, since old flows stay
  where they are, keeps the load uneven longer -- :func:`residual_survival` shows the effect.
* **Packets**: 1 Gbps of 64-byte frames = 1.488 Mpps in total (84 bytes on the wire), i.e. ~149
  packets/s per concurrent flow on average; per-flow rates are lognormal (sigma 1.0 by default:
  the top 10 % of flows carry ~40 % of the packets), drawn independently of lifetimes.
* The population at t = 0 is already stationary: ~10 000 flows whose lifetimes are drawn
  length-biased (a flow's chance to be active is proportional to its length) with a uniform age.
  Each flow sends Poisson packets at its rate between its start and its end.
* Keys are unique IPv4 TCP 5-tuples (10.0.0.0/8 clients, port 443 servers); flow IDs are their
  symmetric Toeplitz hashes, so both directions of a flow have one flow ID.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ..classify import toeplitz_hash_v4
from ..tables import make_keys

#: 1 Gbps of 64-byte frames (84 bytes on the wire each).
GBPS_64B_PPS = 1e9 / (84 * 8)


@dataclass(frozen=True)
class Workload:
    new_flows_per_s: float = 2000.0
    packet_rate_pps: float = GBPS_64B_PPS
    body_median_s: float = 3.85
    body_sigma: float = 0.7
    tail_weight: float = 0.001
    tail_alpha: float = 1.5
    tail_min_s: float = 30.0
    rate_sigma: float = 1.0
    duration_s: float = 30.0
    #: (time_s, multiplier) steps applied to every flow's packet rate from time_s on
    rate_profile: tuple[tuple[float, float], ...] = ()

    def validated(self) -> "Workload":
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "rate_profile":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{f.name}: expected a finite number, got {v!r}")
        for name in ("new_flows_per_s", "packet_rate_pps", "body_median_s", "tail_min_s", "duration_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("body_sigma", "rate_sigma"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.tail_weight < 1:
            raise ValueError(f"tail_weight: must be in [0, 1), got {self.tail_weight}")
        if not self.tail_alpha > 1:
            raise ValueError(f"tail_alpha: must be > 1 (finite mean), got {self.tail_alpha}")
        last = -math.inf
        for i, step in enumerate(self.rate_profile):
            if not isinstance(step, tuple) or len(step) != 2:
                raise ValueError(f"rate_profile: step {i} must be a (time_s, multiplier) pair")
            t, m = step
            if not t > last or not m >= 0:
                raise ValueError(f"rate_profile: step {i} needs increasing times and a multiplier >= 0")
            last = t
        return self

    @property
    def body_mean_s(self) -> float:
        return self.body_median_s * math.exp(self.body_sigma ** 2 / 2)

    @property
    def tail_mean_s(self) -> float:
        return self.tail_alpha * self.tail_min_s / (self.tail_alpha - 1)

    @property
    def mean_lifetime_s(self) -> float:
        return (1 - self.tail_weight) * self.body_mean_s + self.tail_weight * self.tail_mean_s

    @property
    def concurrent_flows(self) -> float:
        """Little's law: arrivals/s x mean lifetime."""
        return self.new_flows_per_s * self.mean_lifetime_s

    @property
    def mean_flow_pps(self) -> float:
        return self.packet_rate_pps / self.concurrent_flows

    def multiplier(self, t_s: float) -> float:
        m = 1.0
        for t, v in self.rate_profile:
            if t_s >= t:
                m = v
        return m


class Flows(NamedTuple):
    """All flows of a run, ordered by start time (``start_s`` < 0 for the initial population)."""

    start_s: npt.NDArray[np.float64]
    end_s: npt.NDArray[np.float64]
    rate_pps: npt.NDArray[np.float64]
    keys: npt.NDArray[Any]
    flow_ids: npt.NDArray[np.uint32]


def _lifetimes(w: Workload, rng: np.random.Generator, n: int, *, length_biased: bool) -> npt.NDArray[np.float64]:
    mu = math.log(w.body_median_s)
    if length_biased:
        # length-biased lognormal: mu + sigma^2; length-biased Pareto(alpha): Pareto(alpha - 1)
        p_tail = w.tail_weight * w.tail_mean_s / w.mean_lifetime_s
        body = rng.lognormal(mu + w.body_sigma ** 2, w.body_sigma, n)
        tail = w.tail_min_s * (1 + rng.pareto(w.tail_alpha - 1, n))
    else:
        p_tail = w.tail_weight
        body = rng.lognormal(mu, w.body_sigma, n)
        tail = w.tail_min_s * (1 + rng.pareto(w.tail_alpha, n))
    return np.where(rng.random(n) < p_tail, tail, body)


def draw_flows(w: Workload, seed: int = 0) -> Flows:
    """Every flow of a run of ``w.duration_s`` seconds (plus the stationary population at t = 0)."""
    w = w.validated()
    rng = np.random.default_rng(seed)
    n0 = int(rng.poisson(w.concurrent_flows))
    life0 = _lifetimes(w, rng, n0, length_biased=True)
    age = rng.random(n0) * life0
    n1 = int(rng.poisson(w.new_flows_per_s * w.duration_s))
    start1 = np.sort(rng.random(n1) * w.duration_s)
    life1 = _lifetimes(w, rng, n1, length_biased=False)
    start = np.concatenate((np.sort(-age), start1))
    order0 = np.argsort(-age, kind="stable")
    life = np.concatenate((life0[order0], life1))
    n = n0 + n1
    sigma = w.rate_sigma
    rate = rng.lognormal(math.log(w.mean_flow_pps) - sigma ** 2 / 2, sigma, n)
    i = np.arange(n, dtype=np.int64)
    src = (0x0A000000 + i // 60000).astype(np.uint32)
    sport = (1024 + i % 60000).astype(np.uint16)
    dst = (0xC6120000 + rng.integers(0, 1 << 16, n)).astype(np.uint32)  # 198.18.0.0/15 (benchmarking)
    dport = np.full(n, 443, dtype=np.uint16)
    keys = make_keys(src, dst, sport, dport, 6)
    fids = toeplitz_hash_v4(src, dst, sport, dport, symmetric=True)
    return Flows(start, start + life, rate, keys, fids)


def residual_survival(w: Workload, t_s: float, samples: int = 1_000_000, seed: int = 0) -> float:
    """Fraction of the flows active at a split still active ``t_s`` later (E[(L - t)+] / E[L])."""
    life = _lifetimes(w.validated(), np.random.default_rng(seed), samples, length_biased=False)
    return float(np.maximum(life - t_s, 0).mean() / life.mean())


__all__ = ["Flows", "GBPS_64B_PPS", "Workload", "draw_flows", "residual_survival"]
