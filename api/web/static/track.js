// The tracking page's live part: the map (Leaflet; tiles only if configured, else an offline outline
// of US states from us-atlas), then Server-Sent Events (status changes, driver moves) with a polling
// fallback when EventSource fails. Everything it shows comes from the public API: no personal data.
(function () {
  "use strict";
  var view = JSON.parse(document.getElementById("initial").textContent);
  var cfg = JSON.parse(document.getElementById("config").textContent);
  var tn = view.tracking_number;
  var OFD = "OUT_FOR_DELIVERY";
  var state = { status: view.status, driver: view.driver, dest: view.destination && view.destination.approx };

  function fmt(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString(undefined, { weekday: "short", month: "short", day: "numeric",
                                                          hour: "numeric", minute: "2-digit" });
  }
  function setText(el, text) { if (el) el.textContent = text; }
  document.querySelectorAll("time[datetime]").forEach(function (t) { t.textContent = fmt(t.getAttribute("datetime")); });

  // --- map ---------------------------------------------------------------------------------
  var map = null, destMarker = null, driverMarker = null, line = null;
  if (window.L) {
    map = L.map("map", { zoomControl: true, attributionControl: !!cfg.tile_url });
    L.control.scale({ imperial: true, metric: true }).addTo(map);
    if (cfg.tile_url) {
      L.tileLayer(cfg.tile_url, { maxZoom: 19, attribution: cfg.tile_attribution || "" }).addTo(map);
    }
    // Offline base layer: US state outlines (us-atlas via topojson-client), always drawn, so the map
    // is useful where tiles are unreachable (no internet, tile server down).
    // Zoomed in on a street, the outline alone shows nothing: an overview inset keeps the place in view.
    var overview = null;
    var ov = document.getElementById("overview");
    if (ov && !cfg.tile_url) {
      overview = L.map(ov, { zoomControl: false, attributionControl: false, dragging: false, scrollWheelZoom: false,
                             doubleClickZoom: false, boxZoom: false, keyboard: false, touchZoom: false });
      overview.setView(state.dest ? [state.dest.lat, state.dest.lng] : [39.5, -98.35], state.dest ? 3 : 2);
      if (state.dest) L.circleMarker([state.dest.lat, state.dest.lng], { radius: 4, color: "#1d2733", weight: 1,
        fillColor: "#ffd23f", fillOpacity: 1, interactive: false }).addTo(overview);
    } else if (ov) { ov.remove(); }
    fetch("/vendor/us-atlas/states-10m.json").then(function (r) { return r.json(); }).then(function (us) {
      if (!window.topojson) return;
      var states = topojson.feature(us, us.objects.states);
      var style = { color: "#7d8a99", weight: 1, fillColor: "#eef1f4", fillOpacity: cfg.tile_url ? 0 : 1 };
      L.geoJSON(states, { style: style, interactive: false }).addTo(map).bringToBack();
      if (overview) L.geoJSON(states, { style: style, interactive: false }).addTo(overview).bringToBack();
    }).catch(function () { /* outline is a nicety; markers still show */ });
    if (state.dest) {
      destMarker = L.circleMarker([state.dest.lat, state.dest.lng], { radius: 9, color: "#1d2733", weight: 2,
        fillColor: "#ffd23f", fillOpacity: 1 }).addTo(map).bindTooltip("Delivery area");
      map.setView([state.dest.lat, state.dest.lng], 7);
    } else {
      map.setView([39.5, -98.35], 4);
    }
  }

  function showDriver(driver) {
    var info = document.getElementById("driver-info");
    state.driver = driver;
    var pos = driver && driver.position;
    if (!pos || state.status !== OFD) {
      if (driverMarker && map) { map.removeLayer(driverMarker); driverMarker = null; }
      if (line && map) { map.removeLayer(line); line = null; }
      if (info) { info.hidden = state.status !== OFD; info.removeAttribute("data-lat"); info.removeAttribute("data-lng"); }
      if (info && state.status === OFD) setText(info, "Your driver is on the way.");
      return;
    }
    var parts = [];
    if (driver.distance_km != null) parts.push("Driver is " + driver.distance_km.toFixed(1) + " km away");
    if (driver.stop_number && driver.total_stops) {
      parts.push("stop " + driver.stop_number + " of " + driver.total_stops +
                 (driver.stops_remaining != null ? " (" + driver.stops_remaining + " stops before yours)" : ""));
    }
    if (info) {
      info.hidden = false;
      info.setAttribute("data-lat", pos.lat); info.setAttribute("data-lng", pos.lng);
      setText(info, parts.join(" · ") || "Your driver is on the way.");
    }
    if (!map) return;
    var ll = [pos.lat, pos.lng];
    if (!driverMarker) {
      driverMarker = L.circleMarker(ll, { radius: 10, color: "#fff", weight: 3, fillColor: "#5a2d82",
                                          fillOpacity: 1, className: "driver-marker" }).addTo(map).bindTooltip("Driver");
      if (state.dest) map.fitBounds([ll, [state.dest.lat, state.dest.lng]], { padding: [40, 40], maxZoom: 15 });
      else map.setView(ll, 13);
    } else {
      driverMarker.setLatLng(ll);
      if (!map.getBounds().pad(-0.1).contains(ll)) map.panTo(ll);
    }
    if (state.dest) {
      var pts = [ll, [state.dest.lat, state.dest.lng]];
      if (line) line.setLatLngs(pts);
      else line = L.polyline(pts, { color: "#5a2d82", weight: 2, dashArray: "6 6", interactive: false }).addTo(map);
    }
  }

  function showStatus(s) {
    state.status = s.status;
    var h = document.getElementById("status");
    if (h) { setText(h, s.status_label || s.status); h.setAttribute("data-status", s.status); }
    if (s.steps) {
      var ol = document.getElementById("steps");
      if (ol) ol.innerHTML = s.steps.map(function (st) {
        return '<li class="' + (st.done ? "done " : "") + (st.current ? "current" : "") + '" data-key="' + st.key + '">' +
               st.label + "</li>";
      }).join("");
    }
    if (s.eta !== undefined) {
      var p = document.getElementById("eta");
      if (p) {
        if (s.eta && s.eta.at) {
          var word = s.eta.source === "route" ? "Your driver is due"
            : s.eta.source === "rule" || s.eta.estimated ? "Estimated delivery" : "Expected delivery";
          var iv = s.eta.interval || {};
          p.textContent = word + ": " + fmt(s.eta.at) + (iv.from && iv.to ? " (between " + fmt(iv.from) + " and " + fmt(iv.to) + ")" : "");
        } else {
          p.textContent = s.status === "DELIVERED" ? "Delivered." : "";
        }
      }
    }
  }

  function addTimeline(s) {
    var ol = document.getElementById("timeline");
    if (!ol) return;
    var li = document.createElement("li");
    var t = document.createElement("time"); t.setAttribute("datetime", s.at || ""); t.textContent = fmt(s.at);
    var b = document.createElement("strong"); b.textContent = s.status_label || s.status;
    li.appendChild(t); li.appendChild(b);
    if (s.facility) { var w = document.createElement("span"); w.className = "where"; w.textContent = s.facility.name + ", " + s.facility.city; li.appendChild(w); }
    if (s.reason_code) { var r = document.createElement("span"); r.className = "reason"; r.textContent = s.reason_code.replace(/_/g, " "); li.appendChild(r); }
    ol.insertBefore(li, ol.firstChild);
  }

  showDriver(view.driver);

  // --- live --------------------------------------------------------------------------------
  var live = document.getElementById("live");
  var pollTimer = null;
  function poll() {
    fetch("/v1/track/" + encodeURIComponent(tn) + "/poll").then(function (r) { return r.ok ? r.json() : null; })
      .then(function (v) {
        if (!v) return;
        if (v.status !== state.status) { showStatus(v); }
        showDriver(v.driver);
        setText(live, "Updated " + new Date().toLocaleTimeString() + " (polling)");
      }).catch(function () {});
  }
  function startPolling() {
    if (pollTimer) return;
    pollTimer = setInterval(poll, (cfg.poll_interval_s || 15) * 1000);
    poll();
  }
  if (view.status === "DELIVERED" || view.status === "RETURN_TO_SENDER") {
    setText(live, "");
  } else if (window.EventSource) {
    var es = new EventSource("/v1/track/" + encodeURIComponent(tn) + "/stream");
    var failures = 0;
    es.addEventListener("open", function () { failures = 0; setText(live, "Live"); if (pollTimer) { clearInterval(pollTimer); pollTimer = null; } });
    es.addEventListener("snapshot", function (e) { var v = JSON.parse(e.data); showStatus(v); showDriver(v.driver); setText(live, "Live"); });
    es.addEventListener("status", function (e) {
      var s = JSON.parse(e.data);
      showStatus(s); addTimeline(s);
      if (s.status !== OFD) showDriver(null);
      setText(live, "Live · updated " + new Date().toLocaleTimeString());
    });
    es.addEventListener("driver", function (e) {
      var d = JSON.parse(e.data);
      var prev = state.driver || {};
      showDriver({ position: d.position, distance_km: d.distance_km, stop_number: prev.stop_number,
                   total_stops: prev.total_stops, stops_remaining: prev.stops_remaining });
      setText(live, "Live · driver seen " + new Date().toLocaleTimeString());
    });
    es.addEventListener("error", function () {
      failures += 1;
      setText(live, "Reconnecting…");
      if (failures >= 3) startPolling();  // EventSource keeps retrying; polling covers the gap
    });
  } else {
    startPolling();
  }
  window.parcelTracking = { state: state, map: map, marker: function () { return driverMarker; } };
})();
