"""Write-path verification (issue #17): a canary write through nginx → API → PostgreSQL →
Kafka → consumer, hop by hop (:mod:`.canary`), on demand (``sfops verify``, the action in
:mod:`.action`) and after every mutating action that succeeded (:class:`.action.WritePathCheck`,
the ActionRunner's hook). Configured by ``[verify]`` (:mod:`.config`)."""
