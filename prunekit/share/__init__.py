"""Weight sharing: k-means codebooks per layer, fine-tunable shared values, stored indices."""
