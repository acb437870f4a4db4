// Live cart updates for /cart: progressive enhancement. Without JavaScript the page still
// works (a reload shows the truth; checkout re-checks stock). With it, the server pushes
// changes of the products in the cart for one lease; when the lease ends the page polls, and
// "Resume live updates" asks for a new lease. Leases are never renewed silently: the stream is
// closed before the browser's automatic reconnect could open one.
(function () {
  "use strict";
  var table = document.querySelector("[data-live-cart]");
  if (!table || !window.EventSource || !window.fetch) {
    return;
  }
  var status = document.querySelector('[data-test="live-status"]');
  var resume = document.querySelector('[data-test="live-resume"]');
  var totalCell = document.querySelector('[data-test="cart-total"]');
  var checkout = document.querySelector('[data-test="checkout"]');
  var blocked = document.querySelector('[data-test="checkout-blocked"]');
  var version = Number(table.getAttribute("data-version")) || 0;
  var source = null;
  var pollTimer = null;
  // "live", "polling" or "connecting": a poll answering after a switch must not reschedule.
  var mode = "connecting";

  function money(cents) {
    var sign = cents < 0 ? "-" : "";
    var abs = Math.abs(cents);
    var dollars = String(Math.floor(abs / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    var rest = String(abs % 100).padStart(2, "0");
    return sign + "$" + dollars + "." + rest;
  }

  function clock(iso) {
    var d = new Date(iso);
    if (isNaN(d)) return iso;
    var two = function (n) { return String(n).padStart(2, "0"); };
    return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
  }

  function rows() {
    return Array.prototype.slice.call(table.querySelectorAll('tr[data-test="cart-line"]'));
  }

  // The same rule as the server-rendered page (LineView::stock_note).
  function stockNote(stock, quantity) {
    if (stock <= 0) return "Sold out";
    if (stock < quantity || stock <= 5) return "Only " + stock + " left";
    return "";
  }

  function recompute() {
    var total = 0;
    var short = [];
    rows().forEach(function (row) {
      var price = Number(row.getAttribute("data-price-cents"));
      var quantity = Number(row.getAttribute("data-quantity"));
      var stock = Number(row.getAttribute("data-stock"));
      total += price * quantity;
      if (stock < quantity) {
        var name = row.querySelector('[data-test="line-name"]');
        short.push(name ? name.textContent : "a product");
      }
    });
    if (totalCell) totalCell.innerHTML = "<strong>" + money(total) + "</strong>";
    if (checkout) {
      checkout.textContent = "Check out · " + money(total);
      checkout.disabled = short.length > 0;
    }
    if (blocked) {
      blocked.hidden = short.length === 0;
      blocked.textContent = short.length === 0 ? "" :
        "Not enough stock left for: " + short.join(", ") + ". Lower the quantity to check out.";
    }
  }

  function apply(change) {
    if (change.version > version) version = change.version;
    var row = table.querySelector('tr[data-product-id="' + change.product_id + '"]');
    if (!row) return;
    var quantity = Number(row.getAttribute("data-quantity"));
    row.setAttribute("data-price-cents", change.price_cents);
    row.setAttribute("data-stock", change.stock);
    var unit = row.querySelector('[data-test="line-unit-price"]');
    if (unit) unit.textContent = money(change.price_cents);
    var lineTotal = row.querySelector('[data-test="line-total"]');
    if (lineTotal) lineTotal.textContent = money(change.price_cents * quantity);
    var note = row.querySelector('[data-test="line-stock"]');
    if (note) {
      note.textContent = stockNote(change.stock, quantity);
      note.hidden = note.textContent === "";
    }
    row.classList.add("changed");
    setTimeout(function () { row.classList.remove("changed"); }, 1500);
    recompute();
  }

  function stopPolling() {
    if (pollTimer) clearTimeout(pollTimer);
    pollTimer = null;
  }

  // Everything that changed since the version the page shows.
  function catchUp() {
    return fetch("/cart/changes?since=" + version, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (res) { return res.ok ? res.json() : Promise.reject(res.status); })
      .then(function (body) {
        body.changes.forEach(apply);
        version = Math.max(version, body.version);
        return body.poll_after_secs;
      });
  }

  function poll(every) {
    stopPolling();
    pollTimer = setTimeout(function () {
      catchUp()
        .then(function (next) { if (mode === "polling") poll(next); })
        .catch(function () { if (mode === "polling") poll(every); });
    }, every * 1000);
  }

  function paused(every) {
    mode = "polling";
    status.textContent = "Live updates paused: checking every " + every + " s";
    status.setAttribute("data-state", "polling");
    resume.hidden = false;
    poll(every);
  }

  function live() {
    mode = "connecting";
    stopPolling();
    resume.hidden = true;
    status.textContent = "Connecting for live updates…";
    status.setAttribute("data-state", "connecting");
    source = new EventSource("/cart/live");
    source.addEventListener("lease", function (e) {
      var lease = JSON.parse(e.data);
      mode = "live";
      status.textContent = "Live updates until " + clock(lease.expires_at);
      status.setAttribute("data-state", "live");
      // The lease brings changes from its start on; fetch what changed before it (while the
      // page polled, or since it was rendered) so nothing falls in between.
      catchUp().catch(function () {});
    });
    source.addEventListener("change", function (e) {
      apply(JSON.parse(e.data));
    });
    source.addEventListener("lease-expired", function (e) {
      var end = JSON.parse(e.data);
      source.close();
      version = Math.max(version, end.version);
      paused(end.poll_after_secs);
    });
    source.onerror = function () {
      // Do not let the browser reconnect: that would be a new lease nobody asked for.
      source.close();
      paused(Number(table.getAttribute("data-poll-secs")) || 15);
    };
  }

  resume.addEventListener("click", live);
  recompute();
  live();
})();
