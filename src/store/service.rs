//! Field service: where tickets, bookings and the outbox will go, with their row types, when
//! dispatch and outreach arrive. A ticket, its booking and its outbox row commit together
//! or not at all, so their writes are `impl StoreTx` methods (see `transaction`), with a
//! pool version only where a single statement is the whole story. The invariant each stage
//! will test: an outbox row commits with its ticket.
