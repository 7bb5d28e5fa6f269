"""AE-CFE for white-cell feature extraction across domains (Salehi et al., MICCAI
2022; Salehi 2023 thesis): detect each white cell, pool its ROI features, encode
them with the domain-aligned autoencoder, and classify across domains with a
random forest.

    masks     the JTSC crops with their nucleus/cytoplasm masks (0 / 128 / 255),
              on the field of view every domain is read at.
    detector  the documented substitute for the paper's Mask R-CNN: a U-Net cell
              segmenter trained on the JTSC nucleus/cytoplasm masks, the central
              cell of each crop, its box, and its ROI features `h_i`.
"""
