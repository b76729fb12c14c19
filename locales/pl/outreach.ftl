# Wiadomości forewarn do klientów, po polsku. Zmienne: zob. locales/en/outreach.ftl.

device = { $kind ->
    [washer] pralka
    [fridge] lodówka
    [car] samochód
    [camera] kamera
    [pump] pompa
   *[other] urządzenie
}

# Dopełniacz: „dla Twojej pralki”.
device-genitive = { $kind ->
    [washer] Twojej pralki
    [fridge] Twojej lodówki
    [car] Twojego samochodu
    [camera] Twojej kamery
    [pump] Twojej pompy
   *[other] Twojego urządzenia
}

# Mianownik: „Twoja pralka wymaga uwagi”.
your-device = { $kind ->
    [washer] Twoja pralka
    [fridge] Twoja lodówka
    [car] Twój samochód
    [camera] Twoja kamera
    [pump] Twoja pompa
   *[other] Twoje urządzenie
}

detected = { $mode ->
    [washer-drum_bearing] łożysko bębna Twojej pralki się zużywa
    [washer-drain_pump] pompa odpływowa Twojej pralki zaczyna zawodzić
    [fridge-compressor] sprężarka Twojej lodówki pracuje z trudem i lodówka może przestać chłodzić
    [fridge-refrigerant_leak] z Twojej lodówki prawdopodobnie ucieka czynnik chłodniczy i może ona przestać chłodzić żywność
    [car-battery] akumulator Twojego samochodu słabnie i wkrótce może nie uruchomić silnika
    [car-thermostat] termostat układu chłodzenia Twojego samochodu zawodzi i silnik może się przegrzać
    [camera-sd_card] karta pamięci Twojej kamery się zużywa i nagrania mogą zostać utracone
    [camera-overheating] Twoja kamera się przegrzewa i może się wyłączyć
    [pump-bearing] łożysko Twojej pompy się zużywa
    [pump-seal] uszczelnienie Twojej pompy zaczyna przeciekać
    [silence] przestaliśmy otrzymywać dane z { device-genitive }
    [critical] { your-device } zgłasza poważną usterkę
   *[other] pojawiły się pierwsze oznaki usterki { device-genitive }
}

metric = { $metric ->
    [drum_vibration_rms] drgania bębna
    [drain_time_s] czas odpompowywania wody
    [motor_current_a] prąd silnika
    [water_temp_c] temperatura wody
    [compressor_duty_pct] czas pracy sprężarki
    [cabinet_temp_c] temperatura w lodówce
    [evaporator_temp_c] temperatura parownika
    [battery_voltage_v] napięcie akumulatora
    [cranking_voltage_v] napięcie akumulatora przy rozruchu
    [engine_temp_c] temperatura silnika
    [storage_write_errors] błędy zapisu na karcie pamięci
    [device_temp_c] temperatura kamery
    [dropped_frames_pct] utracone klatki obrazu
    [bearing_temp_c] temperatura łożyska
    [vibration_mm_s] drgania
    [flow_m3h] przepływ wody
    [discharge_pressure_bar] ciśnienie tłoczenia
    [motor_temp_c] temperatura silnika
   *[other] odczyty
}
symptom = { $trend ->
    [higher] Zauważyliśmy nietypowo wysokie wartości: { metric }.
   *[lower] Zauważyliśmy nietypowo niskie wartości: { metric }.
}

weekday = { $weekday ->
    [1] poniedziałek
    [2] wtorek
    [3] środa
    [4] czwartek
    [5] piątek
    [6] sobota
   *[7] niedziela
}
# Dopełniacz: „24 listopada”.
month = { $month ->
    [1] stycznia
    [2] lutego
    [3] marca
    [4] kwietnia
    [5] maja
    [6] czerwca
    [7] lipca
    [8] sierpnia
    [9] września
    [10] października
    [11] listopada
   *[12] grudnia
}
date = { weekday }, { $day } { month }
time = { $hour }:{ $minute }
slot = { $date }, { $start }–{ $end }

greeting = Dzień dobry, { $name },
greeting-anonymous = Dzień dobry,
signature = Zespół serwisowy forewarn
answer = Aby potwierdzić ten termin, odpowiedz TAK. Jeśli wolisz inny termin, odpowiedz, podając dogodne dla Ciebie godziny. W odpowiedzi zachowaj numer { $reference }.
when-failure = { $days ->
    [0] Spodziewamy się awarii w ciągu doby.
    [one] Spodziewamy się awarii w ciągu { $days } dnia.
   *[other] Spodziewamy się awarii w ciągu { $days } dni.
}

proactive_notice =
    .subject = { your-device } wymaga uwagi
    .body = Nasz system monitorowania wykazał, że { detected }. Wkrótce zaproponujemy wizytę technika, aby naprawić usterkę, zanim dojdzie do awarii.
booking_proposed =
    .subject = Wizyta technika w sprawie { device-genitive }: { $slot }
    .body = Nasz system monitorowania wykazał, że { detected }. Aby usunąć usterkę przed awarią, { $technician } może przyjść do Ciebie w terminie: { $slot }.
booking_confirmed =
    .subject = Wizyta potwierdzona: { $slot }
    .body = Dziękujemy. { $technician } przyjdzie do Ciebie w terminie: { $slot }.
technician_en_route =
    .subject = { $technician } jest w drodze
    .body = { $technician } jest już w drodze do Ciebie, aby sprawdzić { $kind ->
        [washer] Twoją pralkę
        [fridge] Twoją lodówkę
        [car] Twój samochód
        [camera] Twoją kamerę
        [pump] Twoją pompę
       *[other] Twoje urządzenie
    }.
rescheduled =
    .subject = Nowy termin wizyty: { $slot }
    .body = Musieliśmy zmienić termin zaplanowanej wizyty. { $technician } przyjdzie do Ciebie w nowym terminie: { $slot }. Przepraszamy za utrudnienia.
incident_notice =
    .subject = Wiemy o problemie z { $count ->
        [1] Twoim urządzeniem
       *[other] Twoimi urządzeniami
    }
    .body = { $mode ->
        [silence] Kilka urządzeń w Twojej okolicy jednocześnie przestało przesyłać dane, prawdopodobnie z powodu przerwy w dostawie prądu lub w działaniu sieci.
       *[other] Wiele urządzeń tego samego modelu wykazuje tę samą usterkę.
    } Problem obejmuje { $count ->
        [one] { $count } Twoje urządzenie
        [few] { $count } Twoje urządzenia
       *[many] { $count } Twoich urządzeń
    }. Nasz zespół już nad nim pracuje, więc nie musisz do nas dzwonić. Napiszemy ponownie, gdy będziemy wiedzieć więcej.
resolved =
    .subject = Serwis { device-genitive } zakończony
    .body = { $outcome ->
        [fault_confirmed] Wizyta zakończona: zużyta część została wymieniona, zanim doszło do awarii.
        [no_fault_found] Wizyta zakończona: nasz technik sprawdził urządzenie i nie znalazł usterki.
       *[other] Wizyta zakończona.
    } Dziękujemy za zaufanie.
cancelled =
    .subject = Wizyta odwołana
    .body = Zaplanowana wizyta technika w sprawie { device-genitive } nie jest już potrzebna i została odwołana. Nie musisz nic robić.

## Podpisane linki: ich etykiety w wiadomości i strony, które otwierają.
answer-links = Wybierz poniżej albo odpowiedz na tę wiadomość, zachowując numer { $reference }.
link-confirm = Potwierdzam ten termin
link-reschedule = Wybieram inny termin
link-decline = Nie chcę tej wizyty
page-title = Wizyta technika
page-confirm-heading = Potwierdź wizytę
page-confirm-text = { $technician } przyjdzie do Ciebie w terminie: { $slot }.
page-confirm-button = Potwierdzam ten termin
page-reschedule-heading = Wybierz inny termin
page-reschedule-text = Wizyta jest teraz zaplanowana na: { $slot }. Wolne są też poniższe terminy; wybierz ten, który Ci odpowiada:
page-reschedule-option = { $slot }, technik: { $technician }
page-no-times = Nie mamy innego wolnego terminu przed spodziewaną awarią. Odpowiedz na naszą wiadomość, podając dogodne godziny i zachowując numer { $reference }, a dyspozytor ustali termin.
page-decline-heading = Rezygnacja z wizyty
page-decline-text = Jeśli zrezygnujesz, nie przyjedziemy w tej sprawie, a urządzenie może ulec awarii bez ostrzeżenia. Nadal możesz do nas zadzwonić w każdej chwili.
page-decline-button = Rezygnuję z wizyty
page-confirmed = Dziękujemy: wizyta jest potwierdzona, termin: { $slot }. { $technician } przyjdzie wtedy do Ciebie.
page-moved = Gotowe: { $technician } przyjdzie do Ciebie w nowym terminie: { $slot }. Wysłaliśmy potwierdzenie.
page-declined = Odwołaliśmy wizytę. Jeśli coś się zmieni, odpowiedz na naszą wiadomość lub zadzwoń do nas.
page-invalid = Ten link jest nieprawidłowy. Otwórz cały link z naszej wiadomości albo odpowiedz na wiadomość.
page-expired = Ten link wygasł. Odpowiedz na naszą wiadomość lub zadzwoń do nas, a ustalimy termin wizyty.
page-used = Na tę wiadomość już odpowiedziano: { $action ->
    [confirm] wizyta została potwierdzona
    [reschedule] wybrano inny termin
   *[decline] zrezygnowano z wizyty
}. Niczego teraz nie zmieniliśmy.
page-changed = Od wysłania tej wiadomości wizyta się zmieniła, więc ten link jest już nieaktualny. Skorzystaj z naszej najnowszej wiadomości.
page-too-late = Wizyta zaraz się zaczyna, więc nie można jej już tutaj zmienić. Jeśli nie możesz być na miejscu, zadzwoń do nas.
page-time-gone = Przepraszamy, ten termin został właśnie zajęty. Wybierz inny:
page-unavailable = Nie możemy teraz odpowiedzieć. Spróbuj ponownie za kilka minut.
