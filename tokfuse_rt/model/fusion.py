"""The TokFuse model: token pathway (tokenizer + mixer + STE + π) and detail pathway, fused by a head.

Shapes: B batch, H×W full resolution, S token-pathway size, K tokens, d code dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TokFuseConfig
from .head import HeadConvs
from .layers import LayersRender
from .quant import l2norm, quantize
from .ste import SelectiveTokenEditing, TokenMixer
from .tone import ToneHead, ToneRender
from .vit import TokenDecoder, TokenEncoder


class DetailNet(nn.Module):
    """2D detail pathway at full resolution: [B, 2, H, W] (ir, vis) -> [B, C, H, W]. Stride 1, any H×W."""

    def __init__(self, cfg: TokFuseConfig):
        super().__init__()
        c = cfg.detail_channels
        self.conv1 = nn.Conv2d(2, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))))


class FusionHead(HeadConvs):
    """[D, base, ir, vis] -> fused luminance in [0, 1]: a per-pixel blend of the sources plus a residual."""

    def forward(self, d, base, ir, vis):
        return self.rule(self.corrections(d, base, ir, vis), base, ir, vis)

    def rule(self, y, base, ir, vis):
        """The per-pixel rule given the corrections ``y`` [B, 2, H, W]."""
        w = torch.sigmoid(y[:, :1])
        return (w * ir + (1.0 - w) * vis + y[:, 1:2]).clamp(0.0, 1.0)


class TokFuse(nn.Module):
    def __init__(self, cfg: TokFuseConfig | None = None):
        super().__init__()
        self.cfg = cfg or TokFuseConfig()
        c = self.cfg
        if c.tokenizer == "titok":  # an official TiTok tokenizer as the frozen token pathway
            from .titok import TiTokTokenizer, check_tokfuse_config

            self.tokenizer = TiTokTokenizer(check_tokfuse_config(c)).requires_grad_(False)
        else:
            self.encoder = TokenEncoder(c)
            self.codebook = nn.Parameter(l2norm(torch.randn(c.codebook_size, c.code_dim)))
            self.decoder = TokenDecoder(c)
        self.mixer = TokenMixer(c)
        self.ste = SelectiveTokenEditing(c)
        self.detail = DetailNet(c)
        if c.head in ("tone", "layers"):
            self.tone = ToneHead(c)
            self.head = ToneRender(c) if c.head == "tone" else LayersRender(c)
        else:
            self.head = FusionHead(c)

    # --- tokenizer -------------------------------------------------------------------------
    def codebook_n(self) -> torch.Tensor:
        if self.cfg.tokenizer == "titok":
            return self.tokenizer.codebook_n()
        return l2norm(self.codebook)

    def encode_latents(self, y_s: torch.Tensor) -> torch.Tensor:
        """[B, 1, S, S] luminance -> [B, K, d] continuous latents (not yet normalised)."""
        if self.cfg.tokenizer == "titok":
            return self.tokenizer.encode_luma(y_s)
        return self.encoder(y_s)

    def decode_tokens(self, q: torch.Tensor) -> torch.Tensor:
        """π: [B, K, d] quantised tokens -> [B, 1, S, S] base map."""
        if self.cfg.tokenizer == "titok":
            return self.tokenizer.decode_luma(q)
        return self.decoder(q)

    def to_token_input(self, y: torch.Tensor) -> torch.Tensor:
        s = self.cfg.image_size
        return F.interpolate(y, size=(s, s), mode="bilinear", align_corners=False)

    def tokenize(self, y_s: torch.Tensor, cb: torch.Tensor | None = None):
        """[B, 1, S, S] -> (z_n continuous normalised, ids [B, K], q [B, K, d])."""
        cb = self.codebook_n() if cb is None else cb
        z = l2norm(self.encode_latents(y_s))
        ids, q = quantize(z, cb)
        return z, ids, q

    def reconstruct(self, y_s: torch.Tensor) -> torch.Tensor:
        """Tokenizer round trip at S×S (inference)."""
        _, _, q = self.tokenize(y_s)
        return self.decode_tokens(q)

    # --- fusion ----------------------------------------------------------------------------
    def shared_tokens(self, q_ir, q_vis, cb, k):
        """Mixer -> quantise -> STE. Returns (z_shared [B,K,d], ids [B,K])."""
        ctx = torch.cat([q_ir.mean(dim=1), q_vis.mean(dim=1)], dim=-1)
        m = l2norm(self.mixer(q_ir, q_vis))
        ids, q = quantize(m, cb)
        if self.training:
            q = m + (q - m).detach()
        z, ids, _ = self.ste(q, ids, ctx, cb, k)
        return z, ids

    # The model in two halves. token_pathway: the 1D tokens, run once per pair at S×S; its whole
    # output is a base map [B, C, S, S] (C = 1 for the "blend" head; 5 for "tone": the decoded base
    # map and the four tone values, constant over the map). render: the 2D half at full resolution, with
    # the base map upsampled to H×W. render has no global operation: every output pixel depends on
    # the sources and base_up within ``render_halo`` pixels, and on nothing else, for any crop whose
    # offset is a multiple of ``render_align`` -- so a large image can be rendered in overlapping
    # tiles, and a video frame can reuse the base map of an earlier frame.
    render_align = 1

    @property
    def render_halo(self) -> int:
        """Pixels of context per output pixel: three 3×3 convolutions (detail conv1 + conv2, head
        conv1); for the "layers" head at least the base layers' two box passes (2·base_radius)."""
        return max(3, 2 * self.cfg.base_radius) if self.cfg.head == "layers" else 3

    def token_pathway(self, ir: torch.Tensor, vis: torch.Tensor, k=None, pool=None, together: bool = False):
        """ir, vis [B, 1, H, W] in [0, 1] -> (base [B, C, S, S], ids [B, K] int64 shared ids after STE).
        ``pool``: an executor (``concurrent.futures``) that tokenises ``ir`` while this thread tokenises
        ``vis`` (the same operations, so the same result; inference only): two CPU cores working on one
        pair without intra-op threads and their barriers. ``together`` (without ``pool``): ``ir`` and ``vis`` go
        through the tokenizer as one batch of 2B, one pass with half the per-op overhead on one thread; every op
        treats each image alone, so the result is the same, as for a batch of pairs (tested)."""
        k = self.cfg.default_k if k is None else k
        cb = self.codebook_n()
        if pool is not None:
            from .quant import get_backend, kernel_backend

            # thread-local settings, carried over: grad mode, the kernel backend and the intra-op threads
            # (OpenMP's thread count is per thread: a new thread would start with one per core)
            mode, kernels, threads = torch.is_inference_mode_enabled(), get_backend(), torch.get_num_threads()

            def tokenize_ir():
                if torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)
                with torch.inference_mode(mode), kernel_backend(kernels):
                    return self.tokenize(self.to_token_input(ir), cb)[2]

            job = pool.submit(tokenize_ir)
            q_vis = self.tokenize(self.to_token_input(vis), cb)[2]
            q_ir = job.result()
        elif together:
            q = self.tokenize(torch.cat([self.to_token_input(ir), self.to_token_input(vis)]), cb)[2]
            q_ir, q_vis = q[: ir.shape[0]], q[ir.shape[0] :]
        else:
            q_ir = self.tokenize(self.to_token_input(ir), cb)[2]
            q_vis = self.tokenize(self.to_token_input(vis), cb)[2]
        z, ids = self.shared_tokens(q_ir, q_vis, cb, k)
        base = self.decode_tokens(z)
        if self.cfg.head in ("tone", "layers"):
            tone = self.tone(z)[:, :, None, None].expand(-1, -1, *base.shape[-2:])
            base = torch.cat([base, tone], dim=1)
        return base, ids

    @staticmethod
    def upsample_base(base: torch.Tensor, size) -> torch.Tensor:
        """base [B, C, S, S] -> base_up [B, C, H, W] (bilinear, half-pixel centres) for ``size`` = (H, W)."""
        return F.interpolate(base, size=tuple(size), mode="bilinear", align_corners=False)

    def render(self, ir: torch.Tensor, vis: torch.Tensor, base_up: torch.Tensor) -> torch.Tensor:
        """Sources [B, 1, H, W] and ``upsample_base(base, (H, W))`` [B, C, H, W] -> fused [B, 1, H, W]."""
        d = self.detail(torch.cat([ir, vis], dim=1))
        return self.head(d, base_up, ir, vis)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor, k=None):
        """ir, vis: [B, 1, H, W] luminance in [0, 1]; k: tokens to edit (default cfg.default_k).

        Returns (fused [B, 1, H, W] in [0, 1], ids [B, K] int64 shared token ids after STE, base [B, C, S, S]).
        """
        base, ids = self.token_pathway(ir, vis, k)
        size = ir.shape[-2:]
        if self.cfg.head in ("tone", "layers"):
            # the four tone channels are constant over the map: broadcast them instead of upsampling them
            # (the same values as render(ir, vis, upsample_base(base, size)) up to float rounding)
            return self.render(ir, vis, (self.upsample_base(base[:, :1], size), base[:, 1:, :1, :1])), ids, base
        return self.render(ir, vis, self.upsample_base(base, size)), ids, base
