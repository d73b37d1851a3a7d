"""Task services, one module per job (the layer the protocols, the dashboard and the admin call).

* ``submit`` — accept a new task (IMAGINE, DESCRIBE, BLEND, SHORTEN, SWAP_FACE);
* ``press`` — press a button of a finished task, and the second step of a MODAL one;
* ``cancel`` — a customer cancels an unfinished task;
* ``operator`` — the admin's fail and retry-elsewhere actions;
* ``seeds`` — the seed of a task's image;
* ``inputs`` and ``acceptance`` — what every accepting service shares: who calls, input
  checks, the tier limit, the price and the hold.

Import the module you need (``from apps.tasks.services.submit import task_submit``): this
package re-exports nothing, so a reader sees where each function lives.
"""
