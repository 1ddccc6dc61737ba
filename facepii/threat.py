"""The threat model a report states: the attacker's knowledge, key scenarios and oracles, as choices and prose.

The configuration validates against these choices, the report states them. The oracle attacks' own
sentences and default budgets come from their registry (:class:`attacks.oracle.OracleAttack`).
"""

from __future__ import annotations

import attacks

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


def oracle_queries(oracle: str, given: int | None = None) -> int | None:
    """Queries per victim of ``--oracle NAME``: ``given`` (``--oracle-queries``), or the oracle attack's
    default (:class:`attacks.oracle.OracleAttack`); None without an oracle."""
    if oracle == "none":
        return None
    return given or attacks.create_oracle(oracle).default_queries

#: ISO/IEC 24745's application models differ in where the biometric references are stored and where the
#: comparison happens; facepii's figures assume this one (and the oracle attacker, the service's interface)
APPLICATION_MODEL = (
    "Application model (ISO/IEC 24745): the biometric references, the protected templates, are stored in the "
    "system's central database and compared on its server (store on server, compare on server); the attacker "
    "breaches that database and takes the stored references{oracle_part}. Where references are kept on a "
    "token or device the user holds, or compared there, a breach takes one person's template, not the "
    "database: the per-victim figures still hold for that person.")
ORACLE_PART = ", or, as the oracle attacker, only reaches the comparison service's interface and never the database"

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
                 aux_queries: int | None = None, attacker_data: dict | None = None) -> str:
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
    if attacker_data is not None:
        a = attacker_data
        note += (f" The attacker's photos are its own dataset ({a['spec']}: {a['photos']} photos of {a['identities']} "
                 "people), not the evaluated one, all of whose identities may be victims")
        note += (f"; {a['photos_set_aside']} of its photos were set aside as a victim's photo or person "
                 f"({a['victim_photos_set_aside']} victims' photos, {a['victim_identities_set_aside']} identities "
                 "that look like victims)." if a["photos_set_aside"] else ".")
    if oracle != "none":
        answers = attacks.create_oracle(oracle).answers
        note += (f" Oracle attacker (a second threat): it never sees a victim's template; {answers}, "
                 f"for probes it chooses ({queries} queries per victim), and reconstructs the face from what it "
                 "recovers.")
    app = APPLICATION_MODEL.format(oracle_part=ORACLE_PART if oracle != "none" else "")
    return app + " " + THREAT_MODEL.format(knowledge=KNOWLEDGE[knowledge], n_aux=n_aux, n_victims=n_victims,
                                           key=KEY_SCENARIOS[key], judge=judge) + note


def row_capabilities(row, settings: dict) -> list[list[str]]:
    """What the attacker holds for each of a row's privacy figures: (scenario, templates, key, target model,
    matcher access). ``row`` is a :class:`facepii.estimates.RowEstimates`, ``settings`` the report's."""
    knowledge = "white box (runs and differentiates it)" if settings.get("knowledge", "white") == "white" \
        else "black box (queries only" + (f"; surrogates {settings['surrogate']}" if settings.get("surrogate")
                                          else "") + ")"
    enc = row.encrypted_matching is not None
    stolen = "the victims' CKKS ciphertexts" if enc else "the victims' protected templates"
    out = []

    def key_text(k):
        if not row.key_mode:
            return "no key (unkeyed)"
        who = "per-user keys" if row.key_mode == "user" else "the system key"
        return f"{who} disclosed (stolen token)" if k == "disclosed" else f"{who} secret (its own keys)"

    if row.privacy is not None:
        out.append(["database breach", stolen, key_text(row.privacy.key or "disclosed"), knowledge, "none"])
    if row.privacy_key_secret is not None:
        out.append(["database breach, key secret", stolen, key_text("secret"), knowledge,
                    "none" + (" (not applicable: ciphertexts)" if row.privacy_key_secret.not_applicable else "")])
    if row.oracle is not None:
        q = row.oracle.oracle or {}
        out.append([f"{q.get('kind', settings.get('oracle'))} oracle", "none (never sees a template)",
                    "none", knowledge, f"{q.get('kind', '')} answers, {q.get('budget_per_victim', '?')} queries "
                    "per victim"])
    return out
