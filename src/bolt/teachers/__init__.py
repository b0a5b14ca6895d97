"""Teachers write latent thoughts for chunks (``bolt synthesize``).

Every backend implements one of the small protocols of ``base``: ``Teacher`` (writes a
latent per request: hf, oracle) or ``PromptTeacher`` (answers chat prompts: the APIs, vLLM;
``PricedTeacher`` when it pays per token). ``make_teacher``
builds one by name and imports its module only then, so no backend's heavy
dependency loads unless it is used. A ``TeacherSpec`` (name and options) is what sharded
runs send to their workers, each of which builds its own teacher.
"""

from bolt.teachers.base import LatentRequest, PricedTeacher, PromptTeacher, Teacher, TeacherSpec, make_teacher

__all__ = ["LatentRequest", "PricedTeacher", "PromptTeacher", "Teacher", "TeacherSpec", "make_teacher"]
