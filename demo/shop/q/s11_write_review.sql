\set p random(1, 20000 * :scale)
\set c random(1, 50000 * :scale)
INSERT INTO reviews (product_id, customer_id, rating, body, created_at) VALUES (:p, :c, 4, 'Nice', now());
