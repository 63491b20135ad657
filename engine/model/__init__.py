"""The networks, with module names equal to the official state-dict keys: the transformer and its
RoPE, the video VAE, the bitwise latent quantizer (bits <-> latent), the text encoder, 8-bit
linear layers, the scale schedule (the token layout all of them are built around), and the one
strict check of a checkpoint's names and shapes against a module (state_keys).

May import: engine.errors, engine.presets, and each other. Never generate/, checkpoints/, media/.
"""
