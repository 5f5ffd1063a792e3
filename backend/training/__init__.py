"""NeuS training on one device: :mod:`.batches` (pixels on the device, rays, marched samples as typed batches),
:mod:`.schedules` (learning rate, hash levels, annealing), :mod:`.jobfolder` (the job folder and what is written
into it) and :mod:`.trainer` (the loop). ``python -m backend train`` (:mod:`backend.train`) drives it.
Needs torch: imported only by the commands that train."""
