-- "shop", the demo's web shop: primary keys only. Load with psql -v scale=N (1 = 300k orders, 900k order lines).
DROP TABLE IF EXISTS order_items, reviews, orders, products, customers CASCADE;
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, name text NOT NULL, country text NOT NULL,
  created_at timestamptz NOT NULL);
CREATE TABLE products (id bigint PRIMARY KEY, sku text NOT NULL, name text NOT NULL, category text NOT NULL,
  price numeric(10,2) NOT NULL, stock int NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL,
  total numeric(12,2) NOT NULL, created_at timestamptz NOT NULL, shipped_at timestamptz);
CREATE TABLE order_items (id bigserial PRIMARY KEY, order_id bigint NOT NULL, product_id bigint NOT NULL,
  qty int NOT NULL, price numeric(10,2) NOT NULL);
CREATE TABLE reviews (id bigserial PRIMARY KEY, product_id bigint NOT NULL, customer_id bigint NOT NULL,
  rating int NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL, moderated_at timestamptz);

INSERT INTO customers SELECT g, 'User' || g || '@Mail.example', 'Customer ' || g,
  (ARRAY['DE','FR','NL','PL','IT','ES'])[1 + g % 6], now() - (g % 1000) * interval '1 day'
  FROM generate_series(1, 50000 * :scale) g;
INSERT INTO products SELECT g, 'SKU-' || lpad(g::text, 7, '0'), 'Product ' || md5(g::text),
  (ARRAY['books','garden','kitchen','toys','tools'])[1 + g % 5], 1 + (g % 300), g % 50
  FROM generate_series(1, 20000 * :scale) g;
INSERT INTO orders (id, customer_id, status, total, created_at, shipped_at)
  SELECT g, 1 + (g::bigint * 7919) % (50000 * :scale)::bigint,
         CASE WHEN g % 100 < 2 THEN 'pending' WHEN g % 100 < 4 THEN 'paid' ELSE 'delivered' END,
         (g % 500) + 0.99, now() - ((300000 * :scale - g) / (300000.0 * :scale)) * interval '500 days',
         CASE WHEN g % 100 >= 4 THEN now() END
  FROM generate_series(1, 300000 * :scale) g;
SELECT setval(pg_get_serial_sequence('orders', 'id'), (SELECT max(id) FROM orders));
INSERT INTO order_items (order_id, product_id, qty, price)
  SELECT 1 + g / 3, 1 + (g::bigint * 104729) % (20000 * :scale)::bigint, 1 + g % 3, 1 + g % 300
  FROM generate_series(0, 900000 * :scale - 1) g;
INSERT INTO reviews (product_id, customer_id, rating, body, created_at, moderated_at)
  SELECT 1 + (g * 31) % (20000 * :scale), 1 + g % (50000 * :scale), 1 + g % 5, 'Review ' || g,
         now() - (g % 700) * interval '1 day', CASE WHEN g % 50 <> 0 THEN now() END
  FROM generate_series(1, 200000 * :scale) g;
VACUUM ANALYZE;
