# Správy forewarn pre zákazníkov, po slovensky. Premenné: pozri locales/en/outreach.ftl.

device = { $kind ->
    [washer] práčka
    [fridge] chladnička
    [car] auto
    [camera] kamera
    [pump] čerpadlo
   *[other] zariadenie
}

# Nominatív: „Vaša práčka potrebuje pozornosť“.
your-device = { $kind ->
    [washer] Vaša práčka
    [fridge] Vaša chladnička
    [car] Vaše auto
    [camera] Vaša kamera
    [pump] Vaše čerpadlo
   *[other] Vaše zariadenie
}

# Genitív: „servis vašej práčky“.
device-genitive = { $kind ->
    [washer] vašej práčky
    [fridge] vašej chladničky
    [car] vášho auta
    [camera] vašej kamery
    [pump] vášho čerpadla
   *[other] vášho zariadenia
}

detected = { $mode ->
    [washer-drum_bearing] ložisko bubna vašej práčky sa opotrebúva
    [washer-drain_pump] vypúšťacie čerpadlo vašej práčky začína zlyhávať
    [fridge-compressor] kompresor vašej chladničky pracuje s námahou a chladnička môže prestať chladiť
    [fridge-refrigerant_leak] z vašej chladničky pravdepodobne uniká chladivo a môže prestať chladiť potraviny
    [car-battery] batéria vášho auta slabne a čoskoro nemusí naštartovať motor
    [car-thermostat] termostat chladenia vášho auta zlyháva a motor sa môže prehriať
    [camera-sd_card] pamäťová karta vašej kamery sa opotrebúva a záznamy sa môžu stratiť
    [camera-overheating] vaša kamera sa prehrieva a môže sa vypnúť
    [pump-bearing] ložisko vášho čerpadla sa opotrebúva
    [pump-seal] tesnenie vášho čerpadla začína pretekať
    [silence] prestali sme dostávať údaje z { device-genitive }
    [critical] { your-device } hlási vážnu poruchu
   *[other] objavili sa prvé známky poruchy { device-genitive }
}

metric = { $metric ->
    [drum_vibration_rms] vibrácie bubna
    [drain_time_s] čas vypúšťania vody
    [motor_current_a] prúd motora
    [water_temp_c] teplota vody
    [compressor_duty_pct] čas chodu kompresora
    [cabinet_temp_c] teplota v chladničke
    [evaporator_temp_c] teplota výparníka
    [battery_voltage_v] napätie batérie
    [cranking_voltage_v] napätie batérie pri štartovaní
    [engine_temp_c] teplota motora
    [storage_write_errors] chyby zápisu na pamäťovú kartu
    [device_temp_c] teplota kamery
    [dropped_frames_pct] stratené snímky videa
    [bearing_temp_c] teplota ložiska
    [vibration_mm_s] vibrácie
    [flow_m3h] prietok vody
    [discharge_pressure_bar] výtlačný tlak
    [motor_temp_c] teplota motora
   *[other] hodnoty
}
symptom = { $trend ->
    [higher] Zaznamenali sme nezvyčajne vysoké hodnoty: { metric }.
   *[lower] Zaznamenali sme nezvyčajne nízke hodnoty: { metric }.
}

weekday = { $weekday ->
    [1] pondelok
    [2] utorok
    [3] streda
    [4] štvrtok
    [5] piatok
    [6] sobota
   *[7] nedeľa
}
# Genitív: „24. novembra“.
month = { $month ->
    [1] januára
    [2] februára
    [3] marca
    [4] apríla
    [5] mája
    [6] júna
    [7] júla
    [8] augusta
    [9] septembra
    [10] októbra
    [11] novembra
   *[12] decembra
}
date = { weekday } { $day }. { month }
time = { $hour }:{ $minute }
slot = { $date }, { $start } – { $end }

greeting = Dobrý deň, { $name },
greeting-anonymous = Dobrý deň,
signature = Servisný tím forewarn
answer = Ak chcete tento termín potvrdiť, odpovedzte ÁNO. Ak vám viac vyhovuje iný termín, odpovedzte a uveďte vhodné časy. V odpovedi prosím ponechajte číslo { $reference }.
when-failure = { $days ->
    [0] Poruchu očakávame do jedného dňa.
    [one] Poruchu očakávame do { $days } dňa.
   *[other] Poruchu očakávame do { $days } dní.
}

proactive_notice =
    .subject = { your-device } potrebuje pozornosť
    .body = Náš monitorovací systém zistil, že { detected }. Čoskoro vám navrhneme návštevu technika, aby sme poruchu odstránili skôr, než sa zariadenie pokazí.
booking_proposed =
    .subject = Návšteva technika kvôli { $kind ->
        [washer] vašej práčke
        [fridge] vašej chladničke
        [car] vášmu autu
        [camera] vašej kamere
        [pump] vášmu čerpadlu
       *[other] vášmu zariadeniu
    }: { $slot }
    .body = Náš monitorovací systém zistil, že { detected }. Aby sme poruchu odstránili skôr, než sa zariadenie pokazí, { $technician } vás môže navštíviť v termíne: { $slot }.
booking_confirmed =
    .subject = Návšteva potvrdená: { $slot }
    .body = Ďakujeme. { $technician } vás navštívi v termíne: { $slot }.
technician_en_route =
    .subject = { $technician } je na ceste
    .body = { $technician } je práve na ceste k vám a skontroluje { $kind ->
        [washer] vašu práčku
        [fridge] vašu chladničku
        [car] vaše auto
        [camera] vašu kameru
        [pump] vaše čerpadlo
       *[other] vaše zariadenie
    }.
rescheduled =
    .subject = Nový termín návštevy: { $slot }
    .body = Museli sme zmeniť termín plánovanej návštevy. { $technician } vás navštívi v novom termíne: { $slot }. Ospravedlňujeme sa za nepríjemnosti.
incident_notice =
    .subject = Vieme o probléme s { $count ->
        [1] vaším zariadením
       *[other] vašimi zariadeniami
    }
    .body = { $mode ->
        [silence] Viaceré zariadenia vo vašom okolí naraz prestali posielať údaje, pravdepodobne pre výpadok elektriny alebo siete.
       *[other] Mnohé zariadenia rovnakého modelu vykazujú rovnakú poruchu.
    } Problém sa týka { $count ->
        [one] { $count } vášho zariadenia
       *[other] { $count } vašich zariadení
    }. Náš tím na ňom už pracuje, takže nám nemusíte volať. Ozveme sa znova, keď budeme vedieť viac.
resolved =
    .subject = Servis { device-genitive } je hotový
    .body = { $outcome ->
        [fault_confirmed] Návšteva je ukončená: opotrebovaný diel sme vymenili skôr, než zlyhal.
        [no_fault_found] Návšteva je ukončená: náš technik zariadenie skontroloval a nenašiel žiadnu poruchu.
       *[other] Návšteva je ukončená.
    } Ďakujeme za dôveru.
cancelled =
    .subject = Návšteva zrušená
    .body = Plánovaná návšteva technika kvôli { $kind ->
        [washer] vašej práčke
        [fridge] vašej chladničke
        [car] vášmu autu
        [camera] vašej kamere
        [pump] vášmu čerpadlu
       *[other] vášmu zariadeniu
    } už nie je potrebná a bola zrušená. Nemusíte nič robiť.

## Podpísané odkazy: ich názvy v správe a stránky, ktoré otvárajú.
answer-links = Vyberte nižšie alebo odpovedzte na túto správu a ponechajte číslo { $reference }.
link-confirm = Potvrdzujem tento termín
link-reschedule = Vybrať iný termín
link-decline = Túto návštevu nechcem
page-title = Návšteva technika
page-confirm-heading = Potvrďte návštevu
page-confirm-text = { $technician } k vám príde v termíne: { $slot }.
page-confirm-button = Potvrdzujem tento termín
page-reschedule-heading = Vyberte iný termín
page-reschedule-text = Návšteva je teraz naplánovaná na: { $slot }. Voľné sú aj tieto termíny; vyberte si ten, ktorý vám vyhovuje:
page-reschedule-option = { $slot }, technik: { $technician }
page-no-times = Pred očakávanou poruchou nemáme iný voľný termín. Odpovedzte na našu správu, uveďte vhodné časy a ponechajte číslo { $reference }; dispečer termín dohodne.
page-decline-heading = Odmietnutie návštevy
page-decline-text = Ak návštevu odmietnete, v tejto veci neprídeme a zariadenie sa môže pokaziť bez varovania. Stále nám môžete kedykoľvek zavolať.
page-decline-button = Odmietam návštevu
page-confirmed = Ďakujeme: návšteva je potvrdená, termín: { $slot }. { $technician } k vám vtedy príde.
page-moved = Hotovo: { $technician } k vám príde v novom termíne: { $slot }. Poslali sme vám potvrdenie.
page-declined = Návštevu sme zrušili. Ak sa niečo zmení, odpovedzte na našu správu alebo nám zavolajte.
page-invalid = Tento odkaz nie je platný. Otvorte celý odkaz z našej správy alebo na správu odpovedzte.
page-expired = Platnosť tohto odkazu uplynula. Odpovedzte na našu správu alebo nám zavolajte a dohodneme návštevu.
page-used = Na túto správu už bolo odpovedané: { $action ->
    [confirm] návšteva bola potvrdená
    [reschedule] bol vybraný iný termín
   *[decline] návšteva bola odmietnutá
}. Teraz sa nič nezmenilo.
page-changed = Od odoslania tejto správy sa návšteva zmenila, preto tento odkaz už neplatí. Použite našu najnovšiu správu.
page-too-late = Návšteva sa čoskoro začne, preto ju tu už nemožno zmeniť. Ak nemôžete byť doma, zavolajte nám.
page-time-gone = Prepáčte, tento termín bol práve obsadený. Vyberte si iný:
page-unavailable = Momentálne nemôžeme odpovedať. Skúste to znova o niekoľko minút.
