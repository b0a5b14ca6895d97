"""Applications built on the library: the embedded arithmetic world and its demo, and the latent
viewer. The library below never imports from here, except the world's defaults named in
``bolt.em.engine`` and the ``world`` evaluation task."""
