"""edge_flash: blockwise ("flash") attention for litert-torch decoder models.

The system under test of this project. ``flash_attention`` has exactly the
contract of litert-torch's ``scaled_dot_product_attention``.
"""

from edge_flash.kernel import DEFAULT_KV_BLOCK_SIZE, DEFAULT_Q_BLOCK_SIZE, flash_attention

__all__ = ["flash_attention", "DEFAULT_Q_BLOCK_SIZE", "DEFAULT_KV_BLOCK_SIZE"]
