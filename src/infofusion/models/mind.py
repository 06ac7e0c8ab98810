"""MInD (Dai et al. 2024): multimodal information disentanglement into shared, private and noise parts.

Per utterance and modality ``m`` (paper section 3):

- ``Z_m``: the modality encoder of ``layers.py`` (LSTM over frames, MLP over a vector; the paper uses
  BERT and transformers);
- ``S_m = E_S(Z_m)``: one shared encoder (Linear + GELU) for every modality (eq. 2);
- ``P_m = E_Pm(Z_m)``: a private encoder (Linear + GELU) per modality (eq. 3);
- ``N_m = E_Pm(G_m)``: Gaussian noise ``G_m ~ N(0, I)`` of Z's width through the *same* private encoder
  (eq. 4), the "uninformativeness" the private encoder must learn to keep apart;
- prediction: ``FC(S_1 ⊕ .. ⊕ S_M ⊕ P_1 ⊕ .. ⊕ P_M)`` then a shallow GELU MLP (eqs. 15-16).

The loss is ``L_task + L_NP + α L_Info + β L_Cons + γ L_Diff + λ (L_Recon + L_CyR)`` (eq. 19):

- ``info``: Deep InfoMax's Jensen-Shannon objective (``mi.JSD``, concat critic) maximised for
  (Z_1 ⊕ .. ⊕ Z_M, S_m), (Z_m, P_m) and (G_m, N_m) (eq. 6). The critics sit in the main optimiser and
  minimise the same loss as the encoders, as in Deep InfoMax: no separate stage;
- ``cons``: Barlow Twins between the shared codes of every modality pair (eqs. 7-9);
- ``diff``: HSIC (inner-product kernel, biased estimator, eq. 10) of (S_m, P_m), (S_m, N_m), (P_a, P_b)
  and (P_m, N_m) (eq. 11);
- ``recon``: MSE between ``Z_m`` and ``D_m(S_m ⊕ P_m ⊕ N_m)`` (eqs. 12-13);
- ``cyr``: cyclic reconstruction across a gradient-reversal layer, ``F_m = S_m ⊕ P_m`` from ``GRL(N_m)``
  and ``N_m`` from ``GRL(F_m)`` (eq. 14): the decoders learn to predict, the encoders learn to make the
  prediction fail, i.e. to remove what F and N share;
- ``np``: the task predicted from ``GRL(N_1 ⊕ .. ⊕ N_M)`` (eqs. 17-18; cross-entropy, or MSE for
  regression) so that N carries no task information.

Each term has a switch (``mind.info=false`` ...), ``mind.noise=false`` removes N and every term on it,
``mind.predict_from`` picks the codes the head sees (the paper's "w/o M-Invariant/Specific" and
"Non-Disentangled" rows). A switched-off term is neither computed nor logged and its networks are not
built. Terms are averaged over their pairs/modalities as in the authors' released code, so the weights of
their MOSI script (``configs/mind.yaml``) apply. Design notes and measurements: ``docs/mind.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Annotated, Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..config import (
    MAX_WIDTH,
    ConfigError,
    Fraction,
    LayerCount,
    Range,
    Seed,
    SignedWeight,
    Weight,
    Width,
)
from ..data.batching import Batch, DialogueLoader
from ..mi import barlow_twins_loss, build_estimator, grad_reverse, hsic
from ..mi.terms import Kernel
from .base import DataInfo, InfoFusionModel, ModelOutput, ModelParams
from .layers import ModalityEncoders, mlp

TERMS = ("np", "info", "cons", "diff", "recon", "cyr")
NOISE_TERMS = ("np", "cyr")  # meaningless without N
CodeKind = Literal["Z", "S", "P"]


def dense_gelu(width: int) -> nn.Sequential:
    """The paper's shared and private encoders: "a simple linear network with GeLU"."""
    return nn.Sequential(nn.Linear(width, width), nn.GELU())


def barlow_twins_off_diagonal_weight(setting: Literal["dim", "1/dim"] | float, width: int) -> float | None:
    """λ_BT: ``"dim"`` (the paper's wording; None lets the library use the width), ``"1/dim"`` (Tsai et
    al. 2021, and the authors' released code) or a number."""
    if setting == "dim":
        return None
    if setting == "1/dim":
        return 1.0 / width
    return float(setting)


@dataclass
class MInDParams(ModelParams):
    """Loss weights of eq. 19 from the authors' MOSI script; see ``configs/mind.yaml``."""

    alpha: Weight = 1.0e-2  # L_Info: Deep InfoMax JSD for (ΣZ, S_m), (Z_m, P_m), (G_m, N_m)
    beta: Weight = 1.0e-4  # L_Cons: Barlow Twins between shared codes of modality pairs
    gamma: Weight = 1.0e-3  # L_Diff: HSIC of (S,P), (S,N), (P_a,P_b), (P,N)
    lambda_: Weight = 0.1  # ``mind.lambda``: L_Recon and L_CyR
    np_weight: Weight = 1.0  # L_NP
    # Table 2 switches: each false removes one term (not computed, not logged, no networks built).
    info: bool = True
    cons: bool = True
    diff: bool = True
    recon: bool = True
    cyr: bool = True
    np: bool = True
    noise: bool = True  # false: no N at all (and so no L_CyR, L_NP, nor N's parts of the others)
    predict_from: list[CodeKind] = field(default_factory=lambda: ["S", "P"])  # codes the head sees
    # Off-diagonal weight λ_BT: 1/dim with beta 1e-4, the authors' pair (the paper's "dim" with the same
    # beta makes the off-diagonal term d² times stronger; see docs/mind.md).
    bt_lambda: Literal["dim", "1/dim"] | Weight = "1/dim"
    hsic_kernel: Kernel = "linear"
    grl_scale: SignedWeight = 1.0  # gradient-reversal factor of L_CyR and L_NP
    cyr_detach_targets: bool = True
    critic_hidden: Width = 128  # JSD statistics networks
    critic_layers: LayerCount = 2
    critic: Literal["concat", "separable"] = "concat"
    # eq. 15's FC width; the predictor's hidden layer: half
    fusion_dim: Annotated[int, Range(2), Range(high=MAX_WIDTH)] = 128
    head_dropout: Fraction = 0.15
    eval_noise_seed: Seed = 0  # seeds the noise stream of each evaluation pass (predictions never use N)

    def __post_init__(self) -> None:
        if not self.predict_from:
            raise ConfigError("mind.predict_from must list some of Z, S and P, got []")


class MInD(InfoFusionModel):
    name = "mind"
    unit = "utterance"
    has_component_codes = True
    has_fusion_representation = False  # its codes are S/P/N per modality, no single fused vector
    params_type = MInDParams
    params: MInDParams

    def __init__(self, info: DataInfo, config: dict) -> None:
        super().__init__(info, config)
        params = self.params
        hidden, dropout = params.hidden, params.dropout
        modalities = info.modalities
        self.use_noise = params.noise
        switches = {t: getattr(params, t) for t in TERMS}
        self.enabled = {t: on and (self.use_noise or t not in NOISE_TERMS) for t, on in switches.items()}
        if len(modalities) < 2:
            self.enabled["cons"] = False  # no pair of modalities to make consistent
        self.weights = {
            "np": params.np_weight,
            "info": params.alpha,
            "cons": params.beta,
            "diff": params.gamma,
            "recon": params.lambda_,
            "cyr": params.lambda_,
        }
        self.predict_from = params.predict_from
        self.grl_scale = params.grl_scale
        self.cyr_detach_targets = params.cyr_detach_targets
        self.eval_noise_seed = params.eval_noise_seed
        self._eval_noise: torch.Generator | None = None  # the current evaluation pass's noise stream
        self.bt_lambda = barlow_twins_off_diagonal_weight(params.bt_lambda, hidden)
        self.hsic_kernel = params.hsic_kernel

        self.encoders = ModalityEncoders(info.dims, info.sequence, hidden, dropout)
        self.shared = dense_gelu(hidden)
        self.private = nn.ModuleDict({m: dense_gelu(hidden) for m in modalities})
        fusion_dim, head_dropout = params.fusion_dim, params.head_dropout
        codes_in = len(self.predict_from) * len(modalities) * hidden
        # First layer: the paper's FC fusion with dimension reduction (eq. 15); the rest is G (eq. 16).
        self.head = mlp([codes_in, fusion_dim, fusion_dim // 2, info.output_dim], head_dropout, nn.GELU)

        critic = {
            "hidden_dim": params.critic_hidden,
            "num_layers": params.critic_layers,
            "critic": params.critic,
        }
        self.critics = nn.ModuleDict()
        if self.enabled["info"]:
            for m in modalities:
                # One statistics network per term, as in the authors' code (eq. 6 leaves it open).
                self.critics[f"S/{m}"] = build_estimator("jsd", len(modalities) * hidden, hidden, **critic)
                self.critics[f"P/{m}"] = build_estimator("jsd", hidden, hidden, **critic)
                if self.use_noise:
                    self.critics[f"N/{m}"] = build_estimator("jsd", hidden, hidden, **critic)
        parts = 3 if self.use_noise else 2
        self.reconstructors = nn.ModuleDict(
            {m: mlp([parts * hidden, hidden, hidden], 0.0, nn.GELU) for m in modalities}
            if self.enabled["recon"]
            else {}
        )
        self.cyclic_decoders = nn.ModuleDict()
        if self.enabled["cyr"]:
            for m in modalities:
                self.cyclic_decoders[f"N_to_F/{m}"] = mlp([hidden, 2 * hidden, 2 * hidden], 0.0, nn.GELU)
                self.cyclic_decoders[f"F_to_N/{m}"] = mlp([2 * hidden, hidden, hidden], 0.0, nn.GELU)
        noise_width = len(modalities) * hidden
        self.noise_head = (
            mlp([noise_width, noise_width // 2, info.output_dim], head_dropout, nn.GELU)
            if self.enabled["np"]
            else None
        )

    def train(self, mode: bool = True) -> MInD:
        if not mode:  # every evaluation pass (eval() starts one) draws the same noise stream again
            self._eval_noise = None
        return super().train(mode)

    # -- forward ----------------------------------------------------------------------------------
    def sample_noise(self, like: torch.Tensor) -> torch.Tensor:
        """G ~ N(0, I) shaped like Z. In eval mode from one generator per evaluation pass, seeded with
        ``eval_noise_seed``: every utterance of the pass gets its own draw, the pass repeats exactly
        (evaluation and t-SNE pictures), and the global random stream of training is left alone."""
        if self.training:
            return torch.randn_like(like)
        if self._eval_noise is None:
            self._eval_noise = torch.Generator().manual_seed(self.eval_noise_seed)
        return torch.randn(like.shape, generator=self._eval_noise, dtype=like.dtype).to(like.device)

    def forward(self, batch: Batch) -> ModelOutput:
        encoded = self.encoders.encode(batch)
        codes: dict[str, torch.Tensor] = {}
        for m in self.info.modalities:
            codes[f"Z/{m}"] = encoded[m]
            codes[f"S/{m}"] = self.shared(encoded[m])
            codes[f"P/{m}"] = self.private[m](encoded[m])
            if self.use_noise:
                codes[f"G/{m}"] = self.sample_noise(encoded[m])
                codes[f"N/{m}"] = self.private[m](codes[f"G/{m}"])
        fused = torch.cat([codes[f"{k}/{m}"] for k in self.predict_from for m in self.info.modalities], -1)
        return ModelOutput(self.shape_predictions(self.head(fused)), codes)

    # -- the loss terms, on the real utterances' codes ``(N, hidden)`` --------------------------------
    def info_loss(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """-Î_JSD of (ΣZ, S_m), (Z_m, P_m), (G_m, N_m): averaged over modalities, summed over kinds."""
        modalities = self.info.modalities
        joint_z = torch.cat([codes[f"Z/{m}"] for m in modalities], dim=-1)
        # What each code's information is measured against: all inputs, its own input, its own noise.
        sources = {"S": {m: joint_z for m in modalities}, "P": {m: codes[f"Z/{m}"] for m in modalities}}
        if self.use_noise:
            sources["N"] = {m: codes[f"G/{m}"] for m in modalities}
        total = joint_z.new_zeros(())
        for kind, source in sources.items():
            losses = [
                self.critics[f"{kind}/{m}"].learning_loss(source[m], codes[f"{kind}/{m}"]) for m in modalities
            ]
            total = total + torch.stack(losses).mean()
        return total

    def consistency_loss(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        pairs = combinations(self.info.modalities, 2)
        return torch.stack(
            [barlow_twins_loss(codes[f"S/{a}"], codes[f"S/{b}"], self.bt_lambda) for a, b in pairs]
        ).mean()

    def difference_pairs(self) -> list[tuple[str, str]]:
        """The code pairs of eq. 11 that this configuration has."""
        modalities = self.info.modalities
        pairs = [(f"S/{m}", f"P/{m}") for m in modalities]
        pairs += [(f"P/{a}", f"P/{b}") for a, b in combinations(modalities, 2)]
        if self.use_noise:
            pairs += [(f"S/{m}", f"N/{m}") for m in modalities] + [(f"P/{m}", f"N/{m}") for m in modalities]
        return pairs

    def difference_loss(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        values = [hsic(codes[a], codes[b], self.hsic_kernel) for a, b in self.difference_pairs()]
        return torch.stack(values).mean()

    def reconstruction_loss(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """||Z_m - D_m(S_m ⊕ P_m ⊕ N_m)||² / d, averaged over modalities (eq. 13)."""
        kinds = ("S", "P", "N") if self.use_noise else ("S", "P")
        errors = [
            F.mse_loss(
                self.reconstructors[m](torch.cat([codes[f"{k}/{m}"] for k in kinds], -1)), codes[f"Z/{m}"]
            )
            for m in self.info.modalities
        ]
        return torch.stack(errors).mean()

    def cyclic_loss(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        """F from GRL(N) and N from GRL(F) (eq. 14), mean squared error averaged over the 2M directions.

        The targets are detached (``mind.cyr_detach_targets``) so the encoders only receive the reversed
        gradient: they make F and N unpredictable from each other rather than pulling the target towards
        the decoder's guess (which, N being independent of the input, would just shrink F)."""
        errors = []
        for m in self.info.modalities:
            features = torch.cat([codes[f"S/{m}"], codes[f"P/{m}"]], dim=-1)
            noise = codes[f"N/{m}"]
            targets = (features.detach(), noise.detach()) if self.cyr_detach_targets else (features, noise)
            from_noise = self.cyclic_decoders[f"N_to_F/{m}"](grad_reverse(noise, self.grl_scale))
            from_features = self.cyclic_decoders[f"F_to_N/{m}"](grad_reverse(features, self.grl_scale))
            errors += [F.mse_loss(from_noise, targets[0]), F.mse_loss(from_features, targets[1])]
        return torch.stack(errors).mean()

    def noise_prediction_loss(self, codes: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The task from GRL(N_1 ⊕ .. ⊕ N_M): cross-entropy, or MSE for regression (eq. 18)."""
        assert self.noise_head is not None
        noise = torch.cat([codes[f"N/{m}"] for m in self.info.modalities], dim=-1)
        predicted = self.noise_head(grad_reverse(noise, self.grl_scale))
        if self.info.task == "regression":
            return F.mse_loss(predicted.reshape(-1), labels.float())
        return F.cross_entropy(predicted, labels)

    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        output = self(batch)
        loss = self.task_loss(batch, output)
        logged = {"task": float(loss.detach())}
        codes = {name: batch.flat(value) for name, value in output.representations.items()}
        labels = batch.flat(batch.labels)
        # Batch statistics (critic negatives, correlations, HSIC) need two utterances; a last batch of one
        # contributes zero to them.
        batch_terms = {"info", "cons", "diff"}
        compute = {
            "np": lambda: self.noise_prediction_loss(codes, labels),
            "info": lambda: self.info_loss(codes),
            "cons": lambda: self.consistency_loss(codes),
            "diff": lambda: self.difference_loss(codes),
            "recon": lambda: self.reconstruction_loss(codes),
            "cyr": lambda: self.cyclic_loss(codes),
        }
        for term in TERMS:
            if not self.enabled[term]:
                continue
            if term in batch_terms and labels.shape[0] < 2:
                logged[term] = 0.0
                continue
            value = compute[term]()
            loss = loss + self.weights[term] * value
            logged[term] = float(value.detach())
        return loss, logged

    # -- diagnostics ----------------------------------------------------------------------------------
    @torch.no_grad()
    def collect_codes(self, loader: DialogueLoader) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Every code of every real utterance of a loader, in eval mode, and the labels."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        parts: dict[str, list[torch.Tensor]] = {}
        labels = []
        for batch in loader:
            batch = self.prepare_batch(batch.to(device))
            for name, value in self(batch).representations.items():
                parts.setdefault(name, []).append(batch.flat(value).cpu())
            labels.append(batch.flat(batch.labels).cpu())
        self.train(was_training)
        return {name: torch.cat(values) for name, values in parts.items()}, torch.cat(labels)

    def epoch_diagnostics(self, loader: DialogueLoader) -> dict[str, float]:
        """Mean linear HSIC of S-P, S-N and P-N over modalities on the validation split."""
        codes, _ = self.collect_codes(loader)
        if next(iter(codes.values())).shape[0] < 2:
            return {}
        modalities = self.info.modalities
        pairs = {"hsic_S_P": ("S", "P")}
        if self.use_noise:
            pairs.update({"hsic_S_N": ("S", "N"), "hsic_P_N": ("P", "N")})
        return {
            name: float(torch.stack([hsic(codes[f"{a}/{m}"], codes[f"{b}/{m}"]) for m in modalities]).mean())
            for name, (a, b) in pairs.items()
        }
