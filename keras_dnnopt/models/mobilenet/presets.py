"""The architecture tables of the MobileNets, as in `keras.applications`."""

# MobileNetV1 (Howard et al., 2017): the stem, a full 3x3 conv to 32 channels with
# stride 2, then 13 depthwise-separable blocks as (pointwise filters, strides).
MOBILENET_V1_STEM_FILTERS = 32
MOBILENET_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)

# MobileNetV2 (Sandler et al., 2018, Table 2): the stem, a full 3x3 conv to 32 channels
# with stride 2, then stages of inverted residual blocks as (expansion t, filters c,
# repeats n, strides s of the first block), then a 1x1 conv to 1280 channels.
MOBILENET_V2_STEM_FILTERS = 32
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
MOBILENET_V2_LAST_FILTERS = 1280
