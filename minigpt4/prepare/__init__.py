"""From raw videos to the hcmw data layout (SPEC section 13).

decode (frames by timestamp, upright: a video file or frames in memory) -> faces (the per-clip
face pipeline: detect through one small detector interface, track one person, re-detect at a
gap's edges, align to the 5-point template, pick the peak frame) -> write (the section 6
layout, atomically, with the clip's sound); cut lists the clips, run drives it all and encode
optionally runs the FaceMAE / VideoMAE / HuBERT extraction on the result.
"""
