"""``decoder``: a template -> face network trained on the auxiliary set's PROTECTED templates.

NbNet family (Mai et al., "On the reconstruction of face images from deep
face templates", TPAMI 2018), adapted to the defense (the attacker is
adaptive): an input head maps the template into the decoder's embedding
space — initialised with the ridge protected -> raw map — and the whole
network, starting from the shared raw decoder, is fine-tuned end to end on
(protected template, face) pairs with an L1 pixel loss plus, for a white-box
attacker, an identity loss 1 - cos(F(x_hat), F(x)) through the differentiable
copy of the target encoder. Without a defense it is the raw decoder itself.
"""

from __future__ import annotations

import copy

import numpy as np

from attacks.base import Attack, Mapper, RowCache, per_template, pool, template_features
from attacks.facemodel import to_unit, train_decoder
from facepii.params import Interval


def _adaptive_net(face_model, w: np.ndarray, b: np.ndarray):
    import torch
    from torch import nn

    class Adaptive(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(w.shape[1], w.shape[0])
            self.head.weight.data = torch.from_numpy(np.asarray(w, np.float32))
            self.head.bias.data = torch.from_numpy(np.asarray(b, np.float32))
            self.dec = copy.deepcopy(face_model.decoder)

        def embed(self, t):
            e = self.head(t)
            return e / e.norm(dim=1, keepdim=True).clamp_min(1e-8)

        def forward(self, t):
            return self.dec(self.embed(t))

    return Adaptive()


class Decoder(Attack):
    """Adaptive NbNet-style decoder: fine-tuned on the auxiliary set's protected templates."""

    registry_name = "decoder"
    white_box_gradients = True

    _parameter_constraints = {"steps": [Interval(int, 1, 1_000_000), None], "lr": [Interval(float, 0, 1, "right")]}

    def __init__(self, steps: int | None = None, lr: float = 5e-4):
        self.steps = steps
        self.lr = lr

    def fit(self, templates, images, *, threat, cache=None):
        self.check_constraints()
        cache = RowCache() if cache is None else cache
        self.threat_ = threat
        cache.decoder = self  # the other attacks of this row (optimize) start from it
        T = np.asarray(templates)
        if threat.templates_in_work_space:
            self.net_ = None  # the shared raw decoder already is this row's decoder
            return self
        if threat.key_disclosed_per_user:
            # one network for all victims: train on auxiliary templates made with the disclosed keys
            rng = np.random.default_rng(threat.seed)
            keys = threat.victim_users
            if keys is not None and len(keys):
                T = threat.protect(threat.aux_embeddings, rng.choice(keys, size=len(T)))
            m = Mapper(threat.defense).fit(T, threat.work_embeddings)
        else:
            m = cache.mapper(threat, T)
        w, b = m.linear
        net = _adaptive_net(threat.face_model, w, b)
        steps = self.steps if self.steps is not None else threat.budget.finetune_steps
        train_decoder(net, template_features(T, threat.defense), images, steps, threat.torch_encoder,
                      id_targets=to_unit(threat.work_embeddings), lr=self.lr, seed=threat.seed,
                      device=threat.device, desc="fine-tuning decoder")
        self.net_ = net.cpu()
        return self

    def decode(self, templates):
        """(faces uint8, face-space coefficients, detail residual) for the stolen templates (N x d, or
        N x K x d: the K input embeddings of a victim averaged on the unit sphere)."""
        import torch

        fm = self.threat_.face_model
        flat, _, k = per_template(templates, None)
        with torch.no_grad():
            if self.net_ is None:
                e = to_unit(flat)
                dec = fm.decoder
            else:
                e = self.net_.embed(torch.from_numpy(template_features(flat, self.threat_.defense))).numpy()
                dec = self.net_.dec
            e = torch.from_numpy(np.ascontiguousarray(pool(e, k), np.float32))  # K templates: their mean
            coef, res = dec.coefficients(e), dec.residual(e)
            x = fm.finish(dec.render(coef, res).clamp(0, 1))  # with the prior's detail
        faces = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        return faces, coef.numpy(), res.numpy()

    def reconstruct(self, templates, users=None):
        return self.decode(np.asarray(templates, np.float32))[0]
