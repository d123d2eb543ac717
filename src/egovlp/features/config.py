"""The typed configuration of ``egovlp extract`` (frozen dataclasses; presets in ``egovlp/configs/extract/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from egovlp.errors import ConfigError
from egovlp.features.sources import SourceConfig
from egovlp.features.windows import WindowConfig

__all__ = ["MODES", "ExtractConfig", "FusedFeatureConfig", "TextFeatureConfig", "VideoFeatureConfig"]

MODES = ("video", "text", "fused")


@dataclass(frozen=True)
class VideoFeatureConfig:
    """mode=video: the dual-encoder video feature of each window."""

    project: bool = True  # through the projector (the release's MQ features: 4096-d); False: the tower's CLS (768-d)
    normalize: bool = False  # L2-normalise (the release does not)


@dataclass(frozen=True)
class TextFeatureConfig:
    """The texts (mode=text, and the query of mode=fused)."""

    project: bool = True  # mode=text: through the projector; False: the <s> state
    normalize: bool = False  # mode=text: L2-normalise
    tokens: bool = False  # mode=text: also save every token's state (unprojected) and the attention mask
    max_length: int = 30  # tokens incl. <s> and </s>; token states are padded to it (NLQ release: 30)
    lowercase: bool = False  # strip and lowercase each text first (the release's NLQ queries)


@dataclass(frozen=True)
class FusedFeatureConfig:
    """mode=fused: each window fused with each query of its clip."""

    pool: str = "cls"  # "cls": the fused video CLS after the fusion norm (release NLQ); "mean": mean of the patches
    text_tokens: bool = True  # also save each query's dual text token states + mask (the NLQ head's query input)


@dataclass(frozen=True)
class ExtractConfig:
    """Everything ``egovlp extract`` needs; ``settings`` that change the features are recorded in the manifest."""

    mode: str = "video"  # video | text | fused
    checkpoint: str = ""  # egovlp .safetensors weight file
    tokenizer: str = ""  # tokenizer directory (modes text and fused)
    out_dir: str = ""
    format: str = "safetensors"  # safetensors | npy
    dtype: str = "float32"  # of the saved features: float32 | float16
    window: WindowConfig = field(default_factory=WindowConfig)
    video: VideoFeatureConfig = field(default_factory=VideoFeatureConfig)
    text: TextFeatureConfig = field(default_factory=TextFeatureConfig)
    fused: FusedFeatureConfig = field(default_factory=FusedFeatureConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    batch_size: int = 32  # windows per forward pass
    num_workers: int = 2  # decoding processes (0: decode in the main process)
    device: str = "auto"  # auto (this rank's GPU, else CPU) | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | fp16 | bf16 (autocast; features are saved in `dtype`)
    on_error: str = "raise"  # unreadable video: "raise" (stop, naming the file) or "skip" (log, list as failed)
    progress: bool = True  # a progress bar (rank 0)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for impossible or missing settings (paths are checked when used)."""
        checks = [
            (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
            (bool(self.checkpoint), "no checkpoint: give --checkpoint W.safetensors (or checkpoint=...)"),
            (bool(self.out_dir), "no output folder: give --out DIR (or out_dir=...)"),
            (self.mode == "video" or bool(self.tokenizer), f"mode={self.mode} needs tokenizer=DIR (--tokenizer)"),
            (self.format in ("safetensors", "npy"), f"format must be 'safetensors' or 'npy', got {self.format!r}"),
            (self.dtype in ("float32", "float16"), f"dtype must be 'float32' or 'float16', got {self.dtype!r}"),
            (self.precision in ("fp32", "fp16", "bf16"), f"precision must be fp32|fp16|bf16, got {self.precision!r}"),
            (self.on_error in ("raise", "skip"), f"on_error must be 'raise' or 'skip', got {self.on_error!r}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.fused.pool in ("cls", "mean"), f"fused.pool must be 'cls' or 'mean', got {self.fused.pool!r}"),
            (self.text.max_length >= 2, f"text.max_length must be >= 2, got {self.text.max_length}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.window.validate()
        self.source.validate(needs_video=self.mode != "text")
