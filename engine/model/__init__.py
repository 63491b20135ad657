"""The networks, with module names equal to the official state-dict keys: the transformer and its
RoPE, the video VAE, the bitwise latent quantizer (bits <-> latent), the text encoder, 8-bit
linear layers, and the scale schedule (the token layout all of them are built around).

May import: engine.errors, engine.presets, and each other. Never generate/, checkpoints/, media/.
"""
