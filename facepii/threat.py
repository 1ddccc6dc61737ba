"""The threat model a report states: the attacker's knowledge, key scenarios and oracles, as choices and prose.

A leaf module: the configuration validates against these choices, the report states them.
"""

from __future__ import annotations

KNOWLEDGE = {
    "white": "white box: it can run and differentiate it",
    "black": "black box: it can only query it",
}
KEY_SCENARIOS = {
    "secret": "the key is secret (the attacker protects its own faces with keys of its own)",
    "disclosed": "the key is disclosed (a stolen token: the attacker uses the real keys)",
    "both": "reported for a secret key and for a disclosed key (stolen token); the disclosed case "
            "is the row's headline figure",
}
ORACLES = {
    "none": "no oracle attack",
    "score": "the matcher returns a similarity score for a probe against a victim (score-solver attack)",
    "decision": "the matcher only accepts or rejects at its threshold (decision-search attack)",
}
ORACLE_QUERIES = {"score": 200, "decision": 2000}  # default queries per victim

THREAT_MODEL = (
    "The attacker has stolen the protected templates of the victims. It knows the target encoder "
    "({knowledge}) and the defense's algorithm and public parameters (Kerckhoffs), and holds public "
    "photos of {n_aux} OTHER people (no identity in common with the {n_victims} victims), whose "
    "protected templates it computes itself: the attacks are trained on protected templates "
    "(adaptive). Keyed defenses: {key}. Success: an independent judge ({judge}) matches the "
    "reconstruction to the victim in a gallery of other photos of the {n_victims} victims (never "
    "the photo the template came from). Rates carry 95% mid-p intervals over victims (one victim, one unit)."
)


def threat_model(knowledge: str, key: str, n_aux: int, n_victims: int, judge: str, judge_is_target: bool,
                 oracle: str = "none", queries: int | None = None, surrogates: list[str] | tuple = (),
                 aux_queries: int | None = None) -> str:
    """The threat model paragraph every report with attacks states."""
    note = (" Note: the judge is the target model itself, not an independent system: its figures are the "
            "white-box upper bound.") if judge_is_target else ""
    if knowledge == "black":
        note += (f" A black-box attacker queries the target: {aux_queries} queries for its auxiliary photos, and "
                 "each row's queries per victim are stated with its figures.") if aux_queries is not None else ""
        if surrogates:
            note += (f" It also owns public face models it can differentiate (surrogates: {', '.join(surrogates)}): "
                     "it maps the stolen templates into their embedding space, trains its face model and optimises "
                     "through them, then refines with queries to the target. No surrogate is a judge.")
    if oracle != "none":
        note += (f" Oracle attacker (a second threat): it never sees a victim's template; {ORACLES[oracle]}, "
                 f"for probes it chooses ({queries} queries per victim), and reconstructs the face from what it "
                 "recovers.")
    return THREAT_MODEL.format(knowledge=KNOWLEDGE[knowledge], n_aux=n_aux, n_victims=n_victims,
                               key=KEY_SCENARIOS[key], judge=judge) + note
