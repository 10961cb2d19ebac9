"""Per-key limits (docs/configuration.md): requests per minute, tokens per minute and a USD budget.

A key's limits come from its config entry (`rpm`, `tpm`, `budgetUsd`); a budget set through
the admin API (`/v1/llm/api-keys/{id}/budget`) replaces the config's `budgetUsd`, and 0 there
means none. Before a request is routed the store checks budget, then TPM, then RPM, and takes
a request slot, in one atomic step; the request's tokens and cost are counted when it ends,
from the same numbers its usage record carries (a cache hit costs nothing).

Counting happens on the request path, before the answer completes (`charge`), so the caller's
next request sees it on any replica: a budget stops spend within one request's cost. A request
that ends another way (an error, a client gone) is counted in the background from the numbers
of its usage record (`charge_later`).
Requests already in flight when a budget runs out still finish.

A key with no limits costs one dict lookup: no store call, no counting.
"""

from __future__ import annotations

import structlog

from proxy.config import Config
from proxy.errors import RateLimited, Unavailable
from proxy.state.base import Rule, StateUnavailable, Store, Verdict

log = structlog.get_logger("proxy.pipeline.quota")
_MAX_PCT = 1e15  # usagePct's ceiling


class QuotaExceeded(RateLimited):
    """429 for a spent budget: OpenAI's `insufficient_quota`."""

    type = "insufficient_quota"
    code = "insufficient_quota"


def refusal(key_id: str, rule: Rule, verdict: Verdict) -> RateLimited:
    retry = verdict.retry_after
    if verdict.limit == "budget":
        return QuotaExceeded(f"the API key '{key_id}' has used its budget: ${verdict.used:.6f} spent of "
                             f"${rule.budget:.6f}", retry_after=retry)
    if verdict.limit == "tpm":
        return RateLimited(f"rate limit reached for the API key '{key_id}' on tokens per minute: limit "
                           f"{rule.tpm}, used {int(verdict.used)}; retry in {retry} s", retry_after=retry)
    return RateLimited(f"rate limit reached for the API key '{key_id}' on requests per minute: limit "
                       f"{rule.rpm}; retry in {retry} s", retry_after=retry)


class Quota:
    def __init__(self, cfg: Config, store: Store) -> None:
        self.store = store
        self.config_budgets = {k.id: k.budget_usd for k in cfg.auth.keys if k.budget_usd}
        self.budgets: dict[str, float] = {}  # set through the admin API; mirrored from the store

    async def reload(self, _data: dict | None = None) -> None:
        self.budgets = await self.store.budgets()

    def rule(self, caller) -> Rule | None:
        """The caller's limits, or None when it has none (the request is not counted at all)."""
        budget = self.budgets.get(caller.id)
        if budget is None:
            budget = caller.budget_usd
        if not (caller.rpm or caller.tpm or budget):
            return None
        return Rule(caller.rpm or 0, caller.tpm or 0, budget or 0.0)

    async def admit(self, key_id: str, rule: Rule) -> None:
        """429 when a limit is reached; 503 when the store that counts cannot be reached."""
        try:
            verdict = await self.store.admit(key_id, rule)
        except StateUnavailable as exc:
            log.warning("quota_store_unavailable", error=str(exc))
            raise Unavailable("the store that counts this API key's limits cannot be reached",
                              retry_after=1, code="state_unavailable") from None
        if verdict is not None:
            raise refusal(key_id, rule, verdict)

    async def charge(self, key_id: str, rule: Rule, tokens: int, cost: float) -> None:
        """Count a finished request's tokens and cost now, before its answer completes."""
        try:
            await self.store.charge(key_id, tokens if rule.tpm else 0, cost)
        except StateUnavailable as exc:
            log.warning("quota_charge_failed", key_id=key_id, error=str(exc))

    def charge_later(self, key_id: str, rule: Rule, tokens: int, cost: float) -> None:
        """Count a request that ended another way (an error, a client gone), in the background."""
        tokens = tokens if rule.tpm else 0
        if tokens or cost:
            self.store.spawn(self.store.charge(key_id, tokens, cost))

    # -- the budget admin API -----------------------------------------------------------------
    def limit(self, key_id: str) -> tuple[float, str]:
        """The budget in force and where it comes from: `api`, `config` or `none`."""
        if key_id in self.budgets:
            return self.budgets[key_id], "api"
        if key_id in self.config_budgets:
            return self.config_budgets[key_id], "config"
        return 0.0, "none"

    async def budget(self, key_id: str) -> dict:
        limit, source = self.limit(key_id)
        spent = await self.store.spend(key_id)
        return {"apiKeyId": key_id, "budgetLimitUsd": limit, "totalSpendUsd": round(spent, 10),
                # capped: a spend over a denormal budget (1e-308) would be inf, which JSON cannot carry
                "usagePct": round(min(spent / limit * 100, _MAX_PCT), 4) if limit else 0.0,
                "exhausted": bool(limit) and spent >= limit, "source": source}

    async def set_budget(self, key_id: str, limit: float | None, spend: float | None = None) -> None:
        if spend is not None:
            await self.store.set_spend(key_id, spend)
        await self.store.set_budget(key_id, limit)
