"""``yoda-sr evaluate``: methods (bicubic, base, plain, yoda) on HR images, metrics (PSNR/SSIM on Y,
LPIPS), results tables and the comparison grid."""
