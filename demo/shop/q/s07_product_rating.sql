\set p random(1, 20000 * :scale)
SELECT avg(rating), count(*) FROM reviews WHERE product_id = :p;
