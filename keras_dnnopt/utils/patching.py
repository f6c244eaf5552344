"""Instance-level method patches that can be undone (used by the callbacks, which patch the
optimizer or the model for the length of a `fit`, and by Grad-CAM, which patches a layer's
`call` for one forward pass)."""

import functools


class MethodPatch:
    """Replaces `obj.<name>` on the instance by `make_wrapper(original)`; `restore()`
    puts the previous state back (an instance attribute, or the class's method)."""

    def __init__(self, obj, name, make_wrapper):
        self.obj = obj
        self.name = name
        self._had_instance_attr = name in vars(obj)
        self._previous = vars(obj).get(name)
        original = getattr(obj, name)
        self.wrapper = functools.wraps(original)(make_wrapper(original))
        setattr(obj, name, self.wrapper)

    def restore(self):
        if vars(self.obj).get(self.name) is not self.wrapper:
            return  # someone patched on top of us; leave their patch in place
        if self._had_instance_attr:
            setattr(self.obj, self.name, self._previous)
        else:
            delattr(self.obj, self.name)
