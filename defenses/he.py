"""``he``: templates stored encrypted with CKKS homomorphic encryption (TenSEAL), matched encrypted.

Real encryption, no mock: TenSEAL (Microsoft SEAL underneath), CKKS with ring degree
``poly_modulus_degree`` (8192: 128-bit security for the default 60+40+40+60-bit modulus chain)
and scale 2^``scale_bits``. The unit embedding is encrypted; matching is the encrypted inner
product (cosine of unit vectors): ciphertext x ciphertext multiplication, rotations that sum
each template's slots, a plaintext mask so that only the score slots survive, and decryption of
the score by the key holder. Several templates share one ciphertext (slot packing: 4096 slots
hold 32 templates of 128 values), so one homomorphic product gives 32 scores.

What the row measures: utility through real encryption and decryption (all genuine pairs and a
seeded sample of ``impostor_pairs`` impostor pairs; every pair would take hours), the HE scores'
error against the plaintext scores of the same pairs, bytes per encrypted template and
milliseconds per comparison. ``transform`` returns what the secret-key holder decrypts (the
templates with CKKS's numerical error); without the secret key the stored ciphertexts reveal
nothing (IND-CPA under RLWE), so a stolen-template attack has nothing to work on when the key
stays secret: the threat is the matcher's scores (``--oracle score``).

SEAL draws keys and encryption noise from the operating system's randomness (it takes no seed):
scores differ between runs at the 1e-7 level. Needs the optional extra ``facepii[he]``.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from defenses.base import Defense, EncryptedMatching, l2_normalize
from facepii.errors import ParameterError
from facepii.metrics import ROWWISE, cosine_similarity
from facepii.params import Interval, Options


def _tenseal():
    try:
        import tenseal
    except ImportError as exc:  # pragma: no cover - the extra is installed by README's command
        raise ParameterError("defense 'he' needs TenSEAL: pip install 'facepii[he]'.") from exc
    return tenseal


class HE(Defense, EncryptedMatching):
    """CKKS homomorphic encryption (TenSEAL): encrypted templates, encrypted inner-product matching."""

    registry_name = "he"
    comparator = "cosine"
    keyed = True
    emits = "ciphertext"
    matching = "own"
    encrypted = True      # utility goes through encrypted_pair_scores (EncryptedMatching)
    reproducible = False  # SEAL draws keys and encryption noise from the OS (CKKS noise ~1e-7 in the scores)

    #: impostor_pairs: about 0.8 ms each through encryption
    _parameter_constraints = {"poly_modulus_degree": [Options((8192, 16384))],
                              "scale_bits": [Interval(int, 20, 50)],
                              "impostor_pairs": [Interval(int, 1000, 10_000_000)]}

    def __init__(self, poly_modulus_degree: int = 8192, scale_bits: int = 40, impostor_pairs: int = 32768,
                 seed: int = 0):
        self.poly_modulus_degree = poly_modulus_degree
        self.scale_bits = scale_bits
        self.impostor_pairs = impostor_pairs
        self.seed = seed

    def fit(self, E, users=None, *, comparator="cosine"):
        super().fit(E, users, comparator=comparator)
        ts = _tenseal()
        s = int(self.scale_bits)
        self.context_ = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=int(self.poly_modulus_degree),
                                   coeff_mod_bit_sizes=[60, s, s, 60])
        self.context_.global_scale = 2.0 ** s
        self.context_.generate_galois_keys()
        slots = int(self.poly_modulus_degree) // 2
        self.block_ = 1 << int(np.ceil(np.log2(self.dim_in_)))
        if self.block_ > slots:
            raise ParameterError(f"he: embeddings of width {self.dim_in_} do not fit {slots} slots.")
        self.per_ct_ = slots // self.block_
        self.timing_ = {"comparisons": 0, "seconds": 0.0}
        return self

    def __deepcopy__(self, memo):
        """Copies share the key material (the attacker's view with a disclosed key holds the real keys;
        SEAL contexts cannot be copied)."""
        new = type(self).__new__(type(self))
        for k, v in self.__dict__.items():
            new.__dict__[k] = v if k == "context_" else copy.deepcopy(v, memo)
        return new

    # ---- encryption -------------------------------------------------------
    def _pack(self, X: np.ndarray) -> list[list[float]]:
        """Rows of X packed per ciphertext, each in a block of ``block_`` slots (zero padded)."""
        out = []
        for s in range(0, len(X), self.per_ct_):
            part = X[s:s + self.per_ct_]
            buf = np.zeros((self.per_ct_, self.block_))
            buf[:len(part), :X.shape[1]] = part
            out.append(buf.ravel().tolist())
        return out

    def encrypt(self, X: np.ndarray) -> list:
        ts = _tenseal()
        return [ts.ckks_vector(self.context_, v) for v in self._pack(np.asarray(X, np.float64))]

    def transform(self, E, users=None):
        """What the key holder decrypts from the stored ciphertexts (encrypt, then decrypt)."""
        X = l2_normalize(E)
        out = np.zeros_like(X)
        for c, ct in enumerate(self.encrypt(X)):
            vals = np.asarray(ct.decrypt()).reshape(self.per_ct_, self.block_)
            part = out[c * self.per_ct_:(c + 1) * self.per_ct_]
            part[:] = vals[:len(part), :X.shape[1]]
        return out.astype(np.float32)

    def encrypted_pair_scores(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Score of A[i] with B[i] for every i, each pair through real encryption, an encrypted
        product, rotations and masked decryption (32 pairs per homomorphic product)."""
        import tenseal.sealapi as sa

        A, B = l2_normalize(A), l2_normalize(B)
        ctx = self.context_
        sctx = ctx.seal_context().data
        ev = sa.Evaluator(sctx)
        gk = ctx.galois_keys().data
        encoder = sa.CKKSEncoder(sctx)
        dec = sa.Decryptor(sctx, ctx.secret_key().data)
        mask_vals = np.zeros(self.per_ct_ * self.block_)
        mask_vals[::self.block_] = 1.0
        out = np.empty(len(A))
        t0 = time.perf_counter()
        for c, (ea, eb) in enumerate(zip(self.encrypt(A), self.encrypt(B))):
            prod = (ea * eb).ciphertext()[0]  # multiply, relinearise, rescale
            shift = self.block_ // 2
            while shift >= 1:  # sum each block's slots into its first slot
                r = sa.Ciphertext()
                ev.rotate_vector(prod, shift, gk, r)
                ev.add_inplace(prod, r)
                shift //= 2
            mask = sa.Plaintext()
            encoder.encode(mask_vals.tolist(), prod.parms_id(), 2.0 ** 20, mask)
            ev.multiply_plain_inplace(prod, mask)  # only the score slots survive decryption
            pt = sa.Plaintext()
            dec.decrypt(prod, pt)
            vals = np.asarray(encoder.decode_double(pt))[::self.block_]
            n = min(self.per_ct_, len(A) - c * self.per_ct_)
            out[c * self.per_ct_:c * self.per_ct_ + n] = vals[:n]
        self.timing_["comparisons"] += len(A)
        self.timing_["seconds"] += time.perf_counter() - t0
        return out

    def score(self, T1, T2):
        """Scores as the secret-key holder computes them from decrypted templates (cosine of the
        decrypted values). The row's utility and the score oracle use :meth:`encrypted_pair_scores`."""
        return cosine_similarity(T1, T2)

    def paired_score(self, T1, T2):
        return ROWWISE["cosine"](T1, T2)

    def template_nbytes(self):
        """Bytes of one template's share of a serialized ciphertext (per_ct_ templates per ciphertext)."""
        ct = self.encrypt(np.ones((1, self.dim_in_)))[0]
        return int(np.ceil(len(ct.serialize()) / self.per_ct_))

    def ms_per_comparison(self) -> float | None:
        t = self.timing_
        return 1000.0 * t["seconds"] / t["comparisons"] if t["comparisons"] else None

    def encryption_info(self) -> dict:
        """The scheme and its parameters, as the report states them."""
        return {"scheme": "CKKS (TenSEAL / Microsoft SEAL)", "poly_modulus_degree": int(self.poly_modulus_degree),
                "scale_bits": int(self.scale_bits), "templates_per_ciphertext": int(self.per_ct_)}
