"""What the built-in ops share: the op base classes, declared parameters, the registry, text helpers and Unicode tables. No op lives here."""
