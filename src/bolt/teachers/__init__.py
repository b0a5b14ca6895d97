"""Teachers write latent thoughts for chunks (``bolt synthesize``).

Every backend implements the small ``Teacher`` protocol of ``base``; ``make_teacher``
builds one by name and imports its module only then, so no backend's heavy
dependency loads unless it is used. A ``TeacherSpec`` (name and options) is what sharded
runs send to their workers, each of which builds its own teacher.
"""

from bolt.teachers.base import LatentRequest, Teacher, TeacherSpec, make_teacher

__all__ = ["LatentRequest", "Teacher", "TeacherSpec", "make_teacher"]
