"""Fake of ``modules/sd_vae.py`` (A1111 v1.10.1, 82a973c0): the external-VAE globals.

``base_vae`` is the checkpoint's own VAE state dict (kept while an external VAE is applied);
``loaded_vae_file`` the external file's path, or None.
"""

base_vae = None
loaded_vae_file = None
checkpoint_info = None


def reload_vae_weights(sd_model=None, vae_file=None):
    return sd_model
