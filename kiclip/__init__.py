"""kiclip: open-vocabulary video action recognition with CLIP (KICLIP)."""

__version__ = "0.1.0"
