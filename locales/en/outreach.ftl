# forewarn's messages to customers, English.
#
# Each message type (the outbox's `message_type`) has a `.subject` and a `.body`; the
# renderer (src/outreach/render.rs) puts a greeting before the body, the answer line after
# it where the customer can answer, and the signature last. Variables:
#   $kind      device kind (washer, fridge, car, camera, pump)
#   $mode      what was detected: kind-component (washer-drum_bearing), silence or critical
#   $slot      the visit, already formatted by `slot` below in the customer's time zone
#   $technician the technician's first name
#   $days      whole days until the expected failure (0: within a day)
#   $count     the customer's devices in an incident
#   $outcome   fault_confirmed, no_fault_found
#   $name      the customer's name
#   $reference the reply reference (threads an answer onto its ticket)

## How a device is called.
device = { $kind ->
    [washer] washing machine
    [fridge] fridge
    [car] car
    [camera] camera
    [pump] pump
   *[other] device
}

## What was detected, in plain words.
detected = { $mode ->
    [washer-drum_bearing] the drum bearing of your washing machine is wearing out
    [washer-drain_pump] the drain pump of your washing machine is starting to fail
    [fridge-compressor] the compressor of your fridge is struggling and may stop cooling
    [fridge-refrigerant_leak] your fridge seems to be losing refrigerant and may stop keeping food cold
    [car-battery] your car's battery is weakening and may soon fail to start the engine
    [car-thermostat] your car's cooling thermostat is failing and the engine may overheat
    [camera-sd_card] the memory card of your camera is wearing out and recordings may be lost
    [camera-overheating] your camera is running too hot and may shut down
    [pump-bearing] the bearing of your pump is wearing out
    [pump-seal] the seal of your pump is starting to leak
    [silence] your { device } has stopped reporting to us
    [critical] your { device } has reported a serious fault
   *[other] your { device } shows early signs of a fault
}

## What a reading measures, for "we noticed unusually high …".
metric = { $metric ->
    [drum_vibration_rms] drum vibration
    [drain_time_s] draining time
    [motor_current_a] motor current
    [water_temp_c] water temperature
    [compressor_duty_pct] compressor running time
    [cabinet_temp_c] temperature inside the fridge
    [evaporator_temp_c] evaporator temperature
    [battery_voltage_v] battery voltage
    [cranking_voltage_v] battery voltage while starting the engine
    [engine_temp_c] engine temperature
    [storage_write_errors] memory card write errors
    [device_temp_c] camera temperature
    [dropped_frames_pct] dropped video frames
    [bearing_temp_c] bearing temperature
    [vibration_mm_s] vibration
    [flow_m3h] water flow
    [discharge_pressure_bar] discharge pressure
    [motor_temp_c] motor temperature
   *[other] readings
}
symptom = { $trend ->
    [higher] We noticed unusually high { metric }.
   *[lower] We noticed unusually low { metric }.
}

## Dates and times, in the customer's time zone.
weekday = { $weekday ->
    [1] Monday
    [2] Tuesday
    [3] Wednesday
    [4] Thursday
    [5] Friday
    [6] Saturday
   *[7] Sunday
}
month = { $month ->
    [1] January
    [2] February
    [3] March
    [4] April
    [5] May
    [6] June
    [7] July
    [8] August
    [9] September
    [10] October
    [11] November
   *[12] December
}
date = { weekday }, { month } { $day }
time = { $hour12 }:{ $minute } { $ampm }
slot = { $date }, { $start } – { $end }

greeting = Hello { $name },
greeting-anonymous = Hello,
signature = Your forewarn service team
answer = To confirm this time, reply YES. To ask for another time, reply with the times that suit you. Please keep the reference { $reference } in your reply.
when-failure = { $days ->
    [0] We expect it to fail within a day.
    [one] We expect it to fail within { $days } day.
   *[other] We expect it to fail within { $days } days.
}

proactive_notice =
    .subject = Your { device } needs attention
    .body = Our monitoring shows that { detected }. We will propose a technician's visit shortly, so that it is fixed before it breaks down.
booking_proposed =
    .subject = A technician's visit for your { device }: { $slot }
    .body = Our monitoring shows that { detected }. To fix it before it breaks down, { $technician } can visit you on { $slot }.
booking_confirmed =
    .subject = Visit confirmed: { $slot }
    .body = Thank you. { $technician } will visit you on { $slot }.
technician_en_route =
    .subject = { $technician } is on the way
    .body = { $technician } is on the way to you now to look at your { device }.
rescheduled =
    .subject = New time for your visit: { $slot }
    .body = We had to change the planned visit. { $technician } will now visit you on { $slot }. We are sorry for the inconvenience.
incident_notice =
    .subject = We know about a problem with your { $count ->
        [1] device
       *[other] devices
    }
    .body = { $mode ->
        [silence] Several devices in your area stopped reporting at the same time, possibly because of a power or network outage.
       *[other] Many devices of the same model are showing the same fault.
    } It affects { $count ->
        [one] { $count } of your devices
       *[other] { $count } of your devices
    }. Our team is already working on it, so there is no need to call us. We will write again when we know more.
resolved =
    .subject = Your { device } has been serviced
    .body = { $outcome ->
        [fault_confirmed] The visit is done: the worn part was replaced before it failed.
        [no_fault_found] The visit is done: our technician checked your { device } and found nothing wrong.
       *[other] The visit is done.
    } Thank you for your trust.
cancelled =
    .subject = Visit cancelled
    .body = The planned technician's visit for your { device } is no longer needed and has been cancelled. You do not need to do anything.

## Signed links: their labels in a message, and the pages they open.
answer-links = Choose below, or reply to this message keeping the reference { $reference }.
link-confirm = Confirm this time
link-reschedule = Choose another time
link-decline = I do not want this visit
page-title = Your technician's visit
page-confirm-heading = Confirm your visit
page-confirm-text = { $technician } will visit you on { $slot }.
page-confirm-button = Confirm this time
page-reschedule-heading = Choose another time
page-reschedule-text = Your visit is now planned for { $slot }. These times are also free; choose the one that suits you:
page-reschedule-option = { $slot } with { $technician }
page-no-times = We have no other free time before the fault is expected. Please reply to our message with the times that suit you, keeping the reference { $reference }, and a dispatcher will arrange it.
page-decline-heading = Decline the visit
page-decline-text = If you decline, we will not visit you about this, and the device may break down without warning. You can still call us at any time.
page-decline-button = Decline the visit
page-confirmed = Thank you: your visit on { $slot } is confirmed. { $technician } will come then.
page-moved = Done: { $technician } will visit you on { $slot } instead. We have sent you a confirmation.
page-declined = We have cancelled the visit. If anything changes, reply to our message or call us.
page-invalid = This link is not valid. Please open the whole link from our message, or reply to the message.
page-expired = This link has expired. Please reply to our message or call us, and we will arrange a visit.
page-used = This message has already been answered: { $action ->
    [confirm] the visit was confirmed
    [reschedule] another time was chosen
   *[decline] the visit was declined
}. Nothing was changed now.
page-changed = Your visit has changed since this message was sent, so this link no longer applies. Please use our latest message.
page-too-late = Your visit is about to begin, so it can no longer be changed here. Please call us if you cannot be there.
page-time-gone = Sorry, that time was taken a moment ago. Please choose another one:
page-unavailable = We cannot answer right now. Please try again in a few minutes.
