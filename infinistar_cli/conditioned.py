"""`infinistar i2v` and `infinistar extend`: videos conditioned on an input image or video."""
from __future__ import annotations

from infinistar_cli.generate import generation_command

i2v = generation_command("i2v", """Animate IMAGE into a video, optionally guided by a PROMPT.

    The image is resized and centre-cropped to the model's frame (like the official scripts),
    encoded, and its multi-scale bits fix the first frame; the rest is generated.

    \b
    Examples:
      infinistar i2v photo.jpg "the waves roll in"
      infinistar i2v --aspect auto --seed 3 portrait.png "she turns and smiles"
      infinistar i2v photo.jpg "a boat sails out" --then "the boat reaches the horizon"
    """)

extend = generation_command("extend", """Continue VIDEO, optionally guided by a PROMPT.

    The last 5 s of the video (480p; the model's conditioning window) are resampled to 16 fps,
    encoded and forced; the next 5 s are generated. The output is the input (at the model's
    size and frame rate) followed by the continuation, or only the new part with --only-new.

    \b
    Examples:
      infinistar extend clip.mp4 "the camera pans to the city"
      infinistar extend clip.mp4 --seconds 10 --only-new -o more.mp4
      infinistar extend clip.mp4 "it starts to rain" --then "the rain stops, a rainbow"
    """)
