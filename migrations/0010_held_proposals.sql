-- A booking is made at once but proposed to its customer later: until `hold_until`
-- (event time) the plan may still move it as later tickets are booked around it, and
-- nobody has been told. `proposed_at` is when its customer was told (the proposal or
-- "rescheduled" message queued in the same transaction); from then on it moves only
-- through the lifecycle. Bookings made before this were proposed when made.
alter table bookings add column hold_until timestamptz;
alter table bookings add column proposed_at timestamptz;
update bookings set proposed_at = written_at;
create index bookings_held on bookings (hold_until)
    where proposed_at is null and cancelled_at is null;

-- Re-timing a day of held visits swaps their slots: checked at the end of the
-- transaction that moves them (`set constraints ... deferred`), at once everywhere else.
alter table bookings drop constraint bookings_no_double_booking;
alter table bookings add constraint bookings_no_double_booking
    exclude using gist (technician_id with =, slot with &&) where (cancelled_at is null)
    deferrable initially immediate;
