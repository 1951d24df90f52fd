"""From raw videos to the hcmw data layout (SPEC section 13).

decode (frames by timestamp, upright) -> detect (one small detector interface) -> track (one
person per clip) -> align (5-point similarity to the face template) -> peak (which frame) ->
write (the section 6 layout, atomically); cut lists the clips, run drives it all and encode
optionally runs the FaceMAE / VideoMAE extraction on the result.
"""
