"""Applications built on the library: the embedded arithmetic world and its demo, and the latent
viewer. The library never imports from here at load time; it names the world's parts only where
they plug in: the ``oracle`` teacher (``bolt.teachers.base.BACKENDS``), the ``world`` evaluation
task (``bolt.evaluate.tasks``), and ``bolt em`` without a corpus, whose inputs ``cli`` has the world
write (``run_em``'s ``prepare_inputs``)."""
