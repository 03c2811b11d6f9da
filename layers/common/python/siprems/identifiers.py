"""What a product SKU and a task id may look like: the API validates its parameters with
these patterns and the model store checks them again before it builds an S3 key from one
(a SKU also arrives from the sales database, not only through the API).

Letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit: no ``/`` or ``..``
can reach a key. This module imports nothing, so every layer may use it.
"""

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
